"""A memory check before anything is built: the run's peak, estimated from its pixel counts
and what its `Parts` declare (the backbone's `Footprint`, the optimiser's `image_buffers`, the
loss terms' `state_bytes`: `term_bytes` below, per image, 0 for the paper's terms)."""

import math
import os
from dataclasses import dataclass
from pathlib import Path

from nst_tf.backbones import DEFAULT_BACKBONE, Footprint, get_backbone
from nst_tf.errors import UserError
from nst_tf.optim import OPTIMIZERS

GIB = 2**30
# Peak RSS is linear in the image's pixels (scripts/bench.py's memory section, R² > 0.999; see
# docs/PERFORMANCE.md): with VGG19, 0.85e9 B before any image, and per pixel the step's bytes
# and the optimiser's buffers, as the parts declare them. What no part declares is TensorFlow
# and Keras: that intercept less VGG19's weights.
RUNTIME_BYTES = 850_000_000 - 80_097_536
PIXEL_BYTES = 12  # an image-sized buffer's, per pixel: 3 float32 channels
# Tiled (nst_tf.tiling), the step holds one tile's crop at a time; what stays image-sized is
# the image, its gradient as the tiles add to it, the content targets and the optimiser's
# buffers. Measured per pixel beyond the L-BFGS history: 130 B at 2048 px, 340 at 3072, 620 at
# 4096 (scripts/tiling_memory.py, docs/TILING.md); the largest, with a margin, for every size.
TILED_BYTES_PER_PIXEL = 650
TILE_STEP = 64  # px between the tile sizes tile=auto tries
SMALLEST_AUTO_TILE = 256  # px: below, margins would cost more than the tile's own pixels
# tile=auto plans tiles to this share of what is available: the tiled estimate is fitted on
# few sizes (docs/TILING.md), and a tiled run is long, so a wrong guess would cost hours.
AUTO_TILE_HEADROOM = 0.8


@dataclass(frozen=True)
class Parts:
    """What a run is built of, as the memory check counts it, asked of each part once: the
    backbone's `Footprint`, the optimiser's image-sized buffers per image at `history` (its
    optimizer.history_size, or 0) and the loss terms' state in bytes per image (`term_bytes`,
    0 for the paper's terms)."""

    footprint: Footprint
    buffers: int
    history: int
    term_bytes: float = 0.0

    @classmethod
    def of(cls, optimizer: str, history: int = 0, backbone: str = DEFAULT_BACKBONE,
           term_bytes: float = 0.0) -> "Parts":
        """The parts by their names (the optimiser's and the backbone's)."""
        return cls(get_backbone(backbone).footprint, OPTIMIZERS[optimizer].image_buffers(history),
                   history, term_bytes)

    @property
    def base(self) -> float:
        """The bytes before any image: the runtime and the backbone's weights."""
        return RUNTIME_BYTES + self.footprint.weight_bytes

    @property
    def state_per_pixel(self) -> float:
        """The optimiser's buffers' bytes per pixel."""
        return self.buffers * PIXEL_BYTES


@dataclass(frozen=True)
class Tiling:
    """How a size is computed: whole (`tile` None) or in tiles of `tile` px, the estimated peak
    in bytes, and why."""

    tile: int | None
    estimate: float
    why: str


def estimate_peak(pixels: int, style_pixels: int, parts: Parts, batch: int = 1) -> float:
    """Bytes at the peak: the optimiser's buffers, the terms' state and the step or a style's
    forward pass, for `batch` images optimised at once (styles are read one at a time)."""
    return parts.base + batch * member_bytes(pixels, parts) + max(
        0, style_pixels - batch * pixels) * parts.footprint.step_bytes_per_pixel


def member_bytes(pixels: int, parts: Parts) -> float:
    """What each image of a batch adds: its optimiser buffers, its terms' state and its share
    of the step."""
    return parts.term_bytes + pixels * (parts.state_per_pixel
                                        + parts.footprint.step_bytes_per_pixel)


def largest_batch(pixels: int, style_pixels: int, parts: Parts, cap: int,
                  available: float | None = None) -> int:
    """The most images (1..cap) whose estimated peak fits in what is available."""
    available = available_bytes() if available is None else available
    if available is None:
        return cap
    fits = [b for b in range(1, cap + 1)
            if estimate_peak(pixels, style_pixels, parts, b) <= available]
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


def tiled_peak(content: tuple[int, int], tile: int, parts: Parts, batch: int = 1) -> float:
    """Bytes at the peak of a run computed in tiles of `tile` px (styles are read in tiles too,
    so their size no longer counts)."""
    footprint = parts.footprint
    width, height = content
    side = tile + footprint.tile_margin
    crop = min(width, side) * min(height, side)
    return parts.base + batch * (width * height * (
        parts.state_per_pixel + TILED_BYTES_PER_PIXEL)
        + crop * footprint.step_bytes_per_pixel + parts.term_bytes)


def plan_tiling(setting: str, key: str, size: int, content: tuple[int, int], style_pixels: int,
                parts: Parts, available: float | None = None, batch: int = 1) -> Tiling:
    """How to compute `key`=`size` (a `content` of (width, height) px) as `setting` (auto,
    none or a tile size in px) asks: whole where it fits or as asked, else in the largest tiles
    that fit. Refuses, in one line with the fix, what does not fit either way."""
    whole = estimate_peak(content[0] * content[1], style_pixels, parts, batch)
    available = available_bytes() if available is None else available
    if setting == "none" or setting == "auto" and (available is None or whole <= available):
        check_memory(key, size, content, style_pixels, parts, available, batch,
                     tiles=setting == "auto")
        return Tiling(None, whole, "the whole image fits" if setting == "auto" else "tile=none")
    if setting != "auto":
        tile = int(setting)
        need = tiled_peak(content, tile, parts, batch)
        if available is not None and need > available:
            fits = _largest_tiled(size, content, tile, available, parts, batch)
            raise _refusal(key, size, content, need, available, parts.history,
                           [f"a smaller tile than {tile}"], fits)
        return Tiling(tile, need, f"tile={tile}")
    budget = AUTO_TILE_HEADROOM * available
    longest = max(content) - 1
    for tile in range(longest - longest % TILE_STEP, SMALLEST_AUTO_TILE - 1, -TILE_STEP):
        need = tiled_peak(content, tile, parts, batch)
        if need <= budget:
            return Tiling(tile, need, f"the whole image needs about {whole / GIB:.1f} GiB, "
                                      f"{available / GIB:.1f} GiB is available")
    smallest = tiled_peak(content, SMALLEST_AUTO_TILE, parts, batch)
    raise _refusal(key, size, content, smallest, budget, parts.history, [], _largest_tiled(
        size, content, SMALLEST_AUTO_TILE, budget, parts, batch),
        f" to plan tiles with ({AUTO_TILE_HEADROOM:.0%} of the {available / GIB:.1f} GiB free)")


def check_memory(key: str, size: int, content: tuple[int, int], style_pixels: int,
                 parts: Parts, available: float | None = None, batch: int = 1,
                 tiles: bool = False) -> float:
    """Refuse, in one line with the fix, a run whose estimated peak exceeds what is available
    (`tiles`: tiling is not the fix, it was tried).

    `key`=`size` gives a `content` of (width, height) px. Returns the estimate in bytes.
    """
    pixels = content[0] * content[1]
    need = estimate_peak(pixels, style_pixels, parts, batch)
    available = available_bytes() if available is None else available
    if available is None or need <= available:
        return need
    # the terms' state taken as growing with the pixels, as most of it does
    per_pixel = (parts.footprint.step_bytes_per_pixel + parts.state_per_pixel
                 + parts.term_bytes / pixels)
    shrink = math.sqrt(max(available - parts.base, 0) / per_pixel / max(pixels, style_pixels))
    raise _refusal(key, size, content, need, available, parts.history,
                   [] if tiles else ["tile=auto (computed in tiles)"], math.floor(size * shrink))


def _largest_tiled(size: int, content: tuple[int, int], tile: int, available: float,
                   parts: Parts, batch: int) -> int:
    """The largest size whose image fits in tiles of `tile` px."""
    footprint = parts.footprint
    crop = (tile + footprint.tile_margin) ** 2 * footprint.step_bytes_per_pixel
    per_pixel = (parts.state_per_pixel + TILED_BYTES_PER_PIXEL
                 + parts.term_bytes / (content[0] * content[1]))
    room = max(available - parts.base - batch * crop, 0) / batch
    return math.floor(size * math.sqrt(room / per_pixel / (content[0] * content[1])))


def _refusal(key: str, size: int, content: tuple[int, int], need: float, available: float,
             history: int, fixes: list[str], fits: int, purpose: str = "") -> UserError:
    fixes = [f"size={fits} or less" if key == "size" else f"a largest scale of {fits} or less",
             *fixes]
    if history:  # the optimiser keeps one, which its buffers grow with
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
