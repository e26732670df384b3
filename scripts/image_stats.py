"""What each finished job of a sweep kept of its style, measured on the saved images alone
(no network), beside the figures of the weaknesses the later style terms fix
(docs/REPRODUCTION.md). One row per job, and one for the content photo where it is not the
style (what a transfer started from):

- contrast: each RGB channel's standard deviation over the style's (the style image scaled to
  the result's longer side), averaged over the channels: 1 = the style's contrast, below 1 =
  washed out (Risser et al. 2017);
- saturation: the mean HSV saturation, (max − min) / max of each pixel's RGB, over the
  style's: below 1 = greyer than the style;
- colour W1: the 1-D Wasserstein-1 distance between the result's and the style's values of each
  channel (0-255), averaged over the channels: 0 = the style's colour histograms (Heitz et
  al. 2021);
- patch distance: each 5×5 RGB patch of the result (every 2nd px) against its nearest patch of
  the style (every px), the root mean square difference per value (0-255), averaged: 0 = made
  of the style's own patches (Li & Wand 2016's local structure, measured in pixels).

    python scripts/image_stats.py outputs/experiments/weakness_histogram/<time>
    python scripts/image_stats.py SWEEP_DIR --json
"""

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from job_table import print_job_table  # scripts/, beside this one

from nst_tf.cache import default_cache_dir
from nst_tf.images import fit_long_side, read_rgb, resolve_image
from nst_tf.sweep import SweepJob, format_value

PATCH = 5  # px: a patch's side for the patch distance
PATCH_STEP = 2  # the result's patches every this many px (the style's: every px)
CHUNK = 512  # result patches per distance block, to bound memory


def contrast(image: np.ndarray, style: np.ndarray) -> float:
    """Mean over channels of std(image) / std(style); (h, w, 3) arrays."""
    return float(np.mean(_flat(image).std(axis=0) / _flat(style).std(axis=0)))


def saturation(image: np.ndarray) -> float:
    """The mean HSV saturation of an (h, w, 3) image: (max − min) / max per pixel, 0 if black."""
    top, bottom = image.max(axis=-1), image.min(axis=-1)
    return float(np.mean(np.where(top > 0, (top - bottom) / np.maximum(top, 1e-12), 0.0)))


def wasserstein_1d(u: np.ndarray, v: np.ndarray) -> float:
    """W1 between the empirical distributions of `u` and `v`: the integral over t in (0, 1) of
    |Q_u(t) − Q_v(t)|, the quantile functions, exact on the union of their steps."""
    u, v = np.sort(np.ravel(u)), np.sort(np.ravel(v))
    steps = np.union1d(np.arange(1, len(u) + 1) / len(u), np.arange(1, len(v) + 1) / len(v))
    widths = np.diff(steps, prepend=0.0)
    # on (t_{k-1}, t_k] each quantile function is its ⌈t·n⌉-th smallest value
    at = steps - widths / 2
    q_u = u[np.ceil(at * len(u)).astype(int) - 1]
    q_v = v[np.ceil(at * len(v)).astype(int) - 1]
    return float(np.sum(widths * np.abs(q_u - q_v)))


def colour_w1(image: np.ndarray, style: np.ndarray) -> float:
    """Mean over channels of the W1 distance of their values."""
    a, b = _flat(image), _flat(style)
    return float(np.mean([wasserstein_1d(a[:, c], b[:, c]) for c in range(a.shape[1])]))


def patches(image: np.ndarray, size: int, step: int) -> np.ndarray:
    """Every size×size patch of an (h, w, c) image, every `step` px, flattened: (P, size²c)."""
    view = np.lib.stride_tricks.sliding_window_view(image, (size, size), axis=(0, 1))
    return view[::step, ::step].reshape(-1, image.shape[2] * size * size)


def patch_distance(image: np.ndarray, style: np.ndarray, size: int = PATCH,
                   step: int = PATCH_STEP) -> float:
    """Mean over the image's patches of the RMS difference per value to its nearest style
    patch (by squared distance)."""
    ours, theirs = patches(image, size, step), patches(style, size, 1)
    norms = np.sum(theirs**2, axis=1)
    nearest = []
    for start in range(0, len(ours), CHUNK):
        block = ours[start:start + CHUNK]
        # ||p − q||² = ||p||² − 2 p·q + ||q||², the smallest over q for each p
        squared = np.sum(block**2, axis=1)[:, None] - 2 * block @ theirs.T + norms[None]
        nearest.append(np.maximum(squared.min(axis=1), 0.0))
    return float(np.mean(np.sqrt(np.concatenate(nearest) / ours.shape[1])))


def measures(image: np.ndarray, style: np.ndarray) -> dict[str, float]:
    """Every measure of an image against its style, both (h, w, 3) in 0-255."""
    return {
        "contrast": contrast(image, style),
        "saturation": saturation(image) / saturation(style),
        "colour_w1": colour_w1(image, style),
        "patch_distance": patch_distance(image, style),
    }


def _flat(image: np.ndarray) -> np.ndarray:
    return image.reshape(-1, image.shape[-1]).astype(np.float64)


def _pixels(path: Path, long_side: int | None = None) -> np.ndarray:
    picture = read_rgb(path)
    if long_side:
        picture = fit_long_side(picture, long_side)
    return np.asarray(picture, np.float64)


def _picture(job: SweepJob, role: str) -> Path:
    """The job's content or (first) style image file, as its run found it."""
    images = job.config.get("paths", {}).get("images")
    return resolve_image(SimpleNamespace(**job.config[role]), role, images, default_cache_dir())


def rows(jobs: list[SweepJob]) -> Iterator[dict[str, Any]]:
    """One row per finished job, then the content photo's where it is not the style."""
    done = [job for job in jobs if job.status == "ok" and job.result]
    first = None  # the first job's long side and style: the photo's row is measured as it
    for job in done:
        result = _pixels(job.result)
        style = _pixels(_picture(job, "style"), max(result.shape[:2]))
        first = first or (job, style)
        yield {"job": job.dir.name, "settings": " ".join(
            f"{key}={format_value(value)}" for key, value in job.overrides.items()),
            **measures(result, style)}
    if first and (content := _picture(first[0], "content")) != _picture(first[0], "style"):
        photo = _pixels(content, max(first[1].shape[:2]))
        yield {"job": "content", "settings": "the photo itself", **measures(photo, first[1])}


def main() -> None:
    print_job_table("scripts/image_stats.py", __doc__, rows, [
        ("contrast / style's", "contrast", ".2f"),
        ("saturation / style's", "saturation", ".2f"),
        ("colour W1", "colour_w1", ".1f"),
        ("patch distance", "patch_distance", ".1f")])


if __name__ == "__main__":
    main()
