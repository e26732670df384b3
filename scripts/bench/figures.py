"""The report's figures, drawn from the run's data: two pictures side by side, and loss against
time of ours and the PyTorch peer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def side_by_side(path: Path, images: Sequence[Path], gap: int = 8) -> None:
    """The images on white, left to right, as a JPEG."""
    from PIL import Image

    pictures = [Image.open(image).convert("RGB") for image in images]
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1),
                               max(p.height for p in pictures)), "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    canvas.save(path, "JPEG", quality=85, optimize=True)


def peer_curves(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Total loss against loop seconds: the peer's, and ours per precision; the bar dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
    seconds, total = rows[0]["peer_curve"]
    axes.plot(seconds, total, label=f"PyTorch peer (torch {rows[0]['torch']})")
    for row in rows:
        axes.plot(row["seconds"], row["total"], label=f"ours, {row['precision']}")
    bar = rows[0]["bar"]
    axes.axhline(bar, color="gray", linestyle="--", linewidth=1, label="the peer's final loss")
    axes.set_yscale("log")
    axes.set_ylim(0.97 * min(bar, *(min(r["total"]) for r in rows)), 3 * bar)
    axes.set_xlabel("seconds (loop wall time)")
    axes.set_ylabel("total loss")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="jpeg", pil_kwargs={"quality": 85})
    plt.close(figure)
