"""A memory check before anything is built: the run's peak, estimated from its pixel counts."""

import math
import os
from dataclasses import dataclass
from pathlib import Path

from nst_tf.errors import UserError

GIB = 2**30
# Peak RSS is linear in the image's pixels (scripts/bench.py's memory section, R² > 0.999; see
# docs/PERFORMANCE.md). These are the fp32 figures; bf16's slope is a few percent lower.
BASE_BYTES = 0.85e9  # TensorFlow, Keras and the VGG19 weights
STEP_BYTES_PER_PIXEL = 2300  # the compiled step's activations and gradients through conv5_1
# What each optimiser keeps per pixel: 3 float32 channels in each of its image-sized buffers.
OPTIMIZER_BYTES_PER_PIXEL = {"lbfgs": lambda history: 2 * history * 12, "adam": lambda _: 2 * 12}
# Tiled (nst_tf.tiling), the step holds one tile's crop at a time; what stays image-sized is
# the image, its gradient as the tiles add to it, the content targets and the optimiser's
# buffers. Measured per pixel beyond the L-BFGS history: 130 B at 2048 px, 340 at 3072, 620 at
# 4096 (scripts/tiling_memory.py, docs/TILING.md); the largest, with a margin, for every size.
TILED_BYTES_PER_PIXEL = 650
TILE_MARGIN = 160  # px a crop adds to its tile's side: VGG19's reach to conv5_1, on its grid
TILE_STEP = 64  # px between the tile sizes tile=auto tries
SMALLEST_AUTO_TILE = 256  # px: below, margins would cost more than the tile's own pixels
# tile=auto plans tiles to this share of what is available: the tiled estimate is fitted on
# few sizes (docs/TILING.md), and a tiled run is long, so a wrong guess would cost hours.
AUTO_TILE_HEADROOM = 0.8


@dataclass(frozen=True)
class Tiling:
    """How a size is computed: whole (`tile` None) or in tiles of `tile` px, the estimated peak
    in bytes, and why."""

    tile: int | None
    estimate: float
    why: str


def estimate_peak(pixels: int, style_pixels: int, optimizer: str, history: int = 0,
                  batch: int = 1) -> float:
    """Bytes at the peak: the optimiser's buffers, and the step or a style's forward pass, for
    `batch` images optimised at once (styles are read one at a time)."""
    return BASE_BYTES + batch * member_bytes(pixels, optimizer, history) + max(
        0, style_pixels - batch * pixels) * STEP_BYTES_PER_PIXEL


def member_bytes(pixels: int, optimizer: str, history: int = 0) -> float:
    """What each image of a batch adds: its optimiser buffers and its share of the step."""
    return pixels * (OPTIMIZER_BYTES_PER_PIXEL[optimizer](history) + STEP_BYTES_PER_PIXEL)


def largest_batch(pixels: int, style_pixels: int, optimizer: str, history: int, cap: int,
                  available: float | None = None) -> int:
    """The most images (1..cap) whose estimated peak fits in what is available."""
    available = available_bytes() if available is None else available
    if available is None:
        return cap
    fits = [b for b in range(1, cap + 1)
            if estimate_peak(pixels, style_pixels, optimizer, history, b) <= available]
    return max(fits, default=1)


def available_bytes() -> float | None:
    """What this process may grow to: free memory (and the cgroup's limit) plus what it holds."""
    held = _rss()
    limits = []
    meminfo = _read("/proc/meminfo")
    for line in (meminfo or "").splitlines():
        if line.startswith("MemAvailable:"):
            limits.append(int(line.split()[1]) * 1024)
    cap, used = _read("/sys/fs/cgroup/memory.max"), _read("/sys/fs/cgroup/memory.current")
    if cap and used and cap.strip().isdigit():
        limits.append(int(cap) - int(used))
    return min(limits) + held if limits else None


def tiled_peak(content: tuple[int, int], tile: int, optimizer: str, history: int = 0,
               batch: int = 1) -> float:
    """Bytes at the peak of a run computed in tiles of `tile` px (styles are read in tiles too,
    so their size no longer counts)."""
    width, height = content
    crop = min(width, tile + TILE_MARGIN) * min(height, tile + TILE_MARGIN)
    return BASE_BYTES + batch * (width * height * (
        OPTIMIZER_BYTES_PER_PIXEL[optimizer](history) + TILED_BYTES_PER_PIXEL)
        + crop * STEP_BYTES_PER_PIXEL)


def plan_tiling(setting: str, key: str, size: int, content: tuple[int, int], style_pixels: int,
                optimizer: str, history: int, available: float | None = None,
                batch: int = 1) -> Tiling:
    """How to compute `key`=`size` (a `content` of (width, height) px) as `setting` (auto,
    none or a tile size in px) asks: whole where it fits or as asked, else in the largest tiles
    that fit. Refuses, in one line with the fix, what does not fit either way."""
    whole = estimate_peak(content[0] * content[1], style_pixels, optimizer, history, batch)
    available = available_bytes() if available is None else available
    if setting == "none" or setting == "auto" and (available is None or whole <= available):
        check_memory(key, size, content, style_pixels, optimizer, history, available, batch,
                     tiles=setting == "auto")
        return Tiling(None, whole, "the whole image fits" if setting == "auto" else "tile=none")
    if setting != "auto":
        tile = int(setting)
        need = tiled_peak(content, tile, optimizer, history, batch)
        if available is not None and need > available:
            fits = _largest_tiled(size, content, tile, optimizer, history, batch, available)
            raise _refusal(key, size, content, need, available, optimizer,
                           [f"a smaller tile than {tile}"], fits)
        return Tiling(tile, need, f"tile={tile}")
    budget = AUTO_TILE_HEADROOM * available
    longest = max(content) - 1
    for tile in range(longest - longest % TILE_STEP, SMALLEST_AUTO_TILE - 1, -TILE_STEP):
        need = tiled_peak(content, tile, optimizer, history, batch)
        if need <= budget:
            return Tiling(tile, need, f"the whole image needs about {whole / GIB:.1f} GiB, "
                                      f"{available / GIB:.1f} GiB is available")
    smallest = tiled_peak(content, SMALLEST_AUTO_TILE, optimizer, history, batch)
    raise _refusal(key, size, content, smallest, budget, optimizer, [], _largest_tiled(
        size, content, SMALLEST_AUTO_TILE, optimizer, history, batch, budget),
        f" to plan tiles with ({AUTO_TILE_HEADROOM:.0%} of the {available / GIB:.1f} GiB free)")


def check_memory(key: str, size: int, content: tuple[int, int], style_pixels: int,
                 optimizer: str, history: int, available: float | None = None,
                 batch: int = 1, tiles: bool = False) -> float:
    """Refuse, in one line with the fix, a run whose estimated peak exceeds what is available
    (`tiles`: tiling is not the fix, it was tried).

    `key`=`size` gives a `content` of (width, height) px. Returns the estimate in bytes.
    """
    pixels = content[0] * content[1]
    need = estimate_peak(pixels, style_pixels, optimizer, history, batch)
    available = available_bytes() if available is None else available
    if available is None or need <= available:
        return need
    per_pixel = STEP_BYTES_PER_PIXEL + OPTIMIZER_BYTES_PER_PIXEL[optimizer](history)
    shrink = math.sqrt(max(available - BASE_BYTES, 0) / per_pixel / max(pixels, style_pixels))
    raise _refusal(key, size, content, need, available, optimizer,
                   [] if tiles else ["tile=auto (computed in tiles)"], math.floor(size * shrink))


def _largest_tiled(size: int, content: tuple[int, int], tile: int, optimizer: str, history: int,
                   batch: int, available: float) -> int:
    """The largest size whose image fits in tiles of `tile` px."""
    crop = (tile + TILE_MARGIN) ** 2 * STEP_BYTES_PER_PIXEL
    per_pixel = OPTIMIZER_BYTES_PER_PIXEL[optimizer](history) + TILED_BYTES_PER_PIXEL
    room = max(available - BASE_BYTES - batch * crop, 0) / batch
    return math.floor(size * math.sqrt(room / per_pixel / (content[0] * content[1])))


def _refusal(key: str, size: int, content: tuple[int, int], need: float, available: float,
             optimizer: str, fixes: list[str], fits: int, purpose: str = "") -> UserError:
    fixes = [f"size={fits} or less" if key == "size" else f"a largest scale of {fits} or less",
             *fixes]
    if optimizer == "lbfgs":
        fixes.append("a smaller optimizer.history_size")
    if key == "size":
        fixes.append("scales=[...] ending at a size that fits")
    return UserError(f"{key}={size} ({content[0]}x{content[1]} px) needs about "
                     f"{need / GIB:.1f} GiB of memory, but {available / GIB:.1f} GiB is available"
                     f"{purpose}; "
                     f"use {', or '.join(fixes)}")


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _rss() -> int:
    status = _read(f"/proc/{os.getpid()}/status") or ""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0
