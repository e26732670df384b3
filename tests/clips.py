"""A test clip made from the Tübingen photo: a slow pan and zoom with a grey occluder moving
across it, so that flow, warping and the reliability mask meet real motion, a disocclusion
and motion boundaries, and CI needs no download."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Clip:
    """The frames (T, H, W, 3) uint8, and per frame the occluder's box (x0, y0, x1, y1)."""

    frames: np.ndarray
    boxes: list[tuple[int, int, int, int]]


def make_clip(photo: Path, frames: int = 12, size: tuple[int, int] = (96, 72),
              pan: float = 1.5, zoom: float = 0.004, box: int = 18, speed: int = 3) -> Clip:
    """`frames` frames of `size` (width, height): the camera pans right by `pan` px and zooms
    in by `zoom` per frame; a flat grey box of side `box` moves left to right by `speed` px a
    frame, uncovering the photo behind it (a disocclusion) as it goes."""
    width, height = size
    with Image.open(photo) as image:
        source = image.convert("RGB").resize((width * 5 // 2, height * 5 // 2),
                                              Image.Resampling.LANCZOS)
    out, boxes = [], []
    for t in range(frames):
        scale = 1.0 + zoom * t
        crop_w, crop_h = 1.5 * width / scale, 1.5 * height / scale
        x0 = 0.1 * width + 1.5 * pan * t  # the source is 1.5x the view
        y0 = 0.5 * height + (1.5 * height - crop_h) / 2
        view = source.resize((width, height), Image.Resampling.BICUBIC,
                             box=(x0, y0, x0 + crop_w, y0 + crop_h))
        pixels = np.asarray(view).copy()
        bx, by = 4 + speed * t, (height - box) // 2
        pixels[by:by + box, bx:bx + box] = 128
        out.append(pixels)
        boxes.append((bx, by, bx + box, by + box))
    return Clip(np.stack(out), boxes)


def write_frames(clip: Clip, folder: Path) -> list[Path]:
    """The clip as a folder of numbered PNGs (a user's frame folder)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, frame in enumerate(clip.frames):
        paths.append(folder / f"frame_{i:04d}.png")
        Image.fromarray(frame).save(paths[-1])
    return paths
