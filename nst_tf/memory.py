"""A memory check before anything is built: the run's peak, estimated from its pixel counts."""

import math
import os
from pathlib import Path

from nst_tf.errors import UserError

GIB = 2**30
# Peak RSS is linear in the image's pixels (scripts/bench.py's memory section, R² > 0.999; see
# docs/PERFORMANCE.md). These are the fp32 figures; bf16's slope is a few percent lower.
BASE_BYTES = 0.85e9  # TensorFlow, Keras and the VGG19 weights
STEP_BYTES_PER_PIXEL = 2300  # the compiled step's activations and gradients through conv5_1
# What each optimiser keeps per pixel: 3 float32 channels in each of its image-sized buffers.
OPTIMIZER_BYTES_PER_PIXEL = {"lbfgs": lambda history: 2 * history * 12, "adam": lambda _: 2 * 12}


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


def check_memory(key: str, size: int, content: tuple[int, int], style_pixels: int,
                 optimizer: str, history: int, available: float | None = None,
                 batch: int = 1) -> float:
    """Refuse, in one line with the fix, a run whose estimated peak exceeds what is available.

    `key`=`size` gives a `content` of (width, height) px. Returns the estimate in bytes.
    """
    pixels = content[0] * content[1]
    need = estimate_peak(pixels, style_pixels, optimizer, history, batch)
    available = available_bytes() if available is None else available
    if available is None or need <= available:
        return need
    per_pixel = STEP_BYTES_PER_PIXEL + OPTIMIZER_BYTES_PER_PIXEL[optimizer](history)
    shrink = math.sqrt(max(available - BASE_BYTES, 0) / per_pixel / max(pixels, style_pixels))
    fits = math.floor(size * shrink)
    fixes = [f"size={fits} or less" if key == "size" else f"a largest scale of {fits} or less"]
    if optimizer == "lbfgs":
        fixes.append("a smaller optimizer.history_size")
    if key == "size":
        fixes.append("scales=[...] ending at a size that fits")
    raise UserError(f"{key}={size} ({content[0]}x{content[1]} px) needs about "
                    f"{need / GIB:.1f} GiB of memory, but {available / GIB:.1f} GiB is available; "
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
