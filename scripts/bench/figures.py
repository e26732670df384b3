"""The report's small JPEG figures: results side by side, and loss-against-time curves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def save_jpeg(path: Path, images: Sequence[Path | np.ndarray], max_bytes: int = 300_000) -> None:
    """Images (files, or 0..255 float arrays) side by side on white, as a JPEG of at most
    `max_bytes`."""
    from PIL import Image

    pictures = [
        Image.fromarray(np.round(np.clip(i, 0, 255)).astype(np.uint8))
        if isinstance(i, np.ndarray) else Image.open(i).convert("RGB")
        for i in images
    ]
    gap = 8
    height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1), height),
                       "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    for quality in (90, 80, 70, 60, 50):
        canvas.save(path, "JPEG", quality=quality, optimize=True)
        if path.stat().st_size <= max_bytes:
            return
    canvas.thumbnail((canvas.width // 2, canvas.height // 2))
    canvas.save(path, "JPEG", quality=70, optimize=True)


def plot_loss_curves(path: Path, curves: Sequence[Mapping[str, Any]], target: float,
                     target_label: str) -> None:
    """Loss against loop time for each curve ({label, seconds, total, reached}), zoomed on the
    finish, with the bar and the moments each reaches it (dotted)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
    lowest = target
    for index, curve in enumerate(curves):
        colour = f"C{index}"
        lowest = min(lowest, *curve["total"])
        axes.plot(curve["seconds"], curve["total"], color=colour, label=curve["label"])
        if curve.get("reached") is not None:
            axes.axvline(curve["reached"], color=colour, linestyle=":", linewidth=1)
    axes.axhline(target, color="gray", linestyle="--", linewidth=1, label=target_label)
    axes.set_yscale("log")
    axes.set_ylim(0.97 * lowest, 3 * target)  # the start is orders of magnitude higher
    axes.set_xlabel("seconds (loop wall time; dotted: when each reaches the bar)")
    axes.set_ylabel("total loss")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="jpeg", pil_kwargs={"quality": 85})
    plt.close(figure)


def plot_time_to_quality(path: Path, ttq: Mapping[str, Any]) -> None:
    """L-BFGS and Adam against Adam's final loss."""
    curves = [{"label": f"{label} (preset)", **ttq["curves"][name],
               "reached": ttq[name]["seconds"]}
              for name, label in (("lbfgs", "L-BFGS"), ("adam", "Adam"))]
    plot_loss_curves(path, curves, ttq["target_total"],
                     f"Adam's loss after {ttq['adam']['iterations_run']} iterations")


def plot_coarse_to_fine(path: Path, c2f: Mapping[str, Any]) -> None:
    """The direct run and the coarse-to-fine run's full-size stage against the direct run's
    final loss (the fine stage starts when the coarse one ends)."""
    scales = ",".join(str(s) for s in c2f["scales"])
    curves = [{"label": label, "seconds": c2f[name]["curve"]["seconds"],
               "total": c2f[name]["curve"]["total"],
               "reached": (c2f[name]["reached"] or {}).get("seconds")}
              for name, label in (("direct", f"direct, size={c2f['size']}"),
                                  ("coarse_to_fine", f"scales=[{scales}]"))]
    plot_loss_curves(path, curves, c2f["target_total"],
                     f"direct run's loss after {c2f['scale_iterations'][-1]} iterations")
