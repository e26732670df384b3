"""A run's pictures: content, styles (blend weights, scales) and masks as read, checked, and
scaled to each size the run optimises at; its first image (noise, content, style or a resumed
snapshot)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nst_tf import color
from nst_tf.backbones import DEFAULT_BACKBONE, get_backbone
from nst_tf.config import CONF_DIR, MAX_SIZE, ImageConfig, RunConfig
from nst_tf.errors import UserError
from nst_tf.files import read_yaml
from nst_tf.images import fitted_size, read_mask, read_rgb, resolve_image, to_array
from nst_tf.memory import Parts, Tiling, plan_tiling
from nst_tf.objective import loss_terms
from nst_tf.resume import Checkpoint


@dataclass
class Pictures:
    """The run's pictures as read (content, styles with blend weights and scales, masks)."""

    content_path: Path
    content: Image.Image
    style_paths: list[Path]
    styles: list[Image.Image]
    blend: list[float]
    scales: list[float]
    masks: list[Image.Image]

    def plan(self, size: int) -> tuple[tuple[int, int], list[tuple[int, int]]]:
        """(width, height) of the content and of each style at `size`, before any resizing."""
        content = fitted_size(self.content.size, size)
        return content, [
            fitted_size(style.size, max(1, round(max(content) * scale)))
            for style, scale in zip(self.styles, self.scales, strict=True)
        ]

    def check(self, settings: RunConfig, batch: int = 1) -> list[Tiling]:
        """Refuse, before anything is allocated, images too thin for the backbone or too big to
        fit (`batch` runs of them at once); how each size is computed (whole or in tiles)."""
        key = "scales" if settings.scales else "size"
        least = get_backbone(settings.model.backbone).min_size
        for size in settings.scales or [settings.size]:
            content, styles = self.plan(size)
            _check_sides("content", self.content_path, self.content.size, content,
                         f"{key}={size}", size, least)
            for path, style, planned in zip(self.style_paths, self.styles, styles, strict=True):
                _check_sides("style", path, style.size, planned, f"{key}={size}", size, least)
        tilings = []
        for size in settings.scales or [settings.size]:
            content, styles = self.plan(size)
            tilings.append(plan_tiling(settings.tile, key, size, content,
                                       max(w * h for w, h in styles), self.parts(settings, size),
                                       batch=batch))
        return tilings

    def parts(self, settings: RunConfig, size: int) -> Parts:
        """What the run is built of, as the memory check counts it at `size`: its backbone, its
        optimiser and what its loss terms hold per image beyond the backbone's footprint (the
        later style terms' style features, patches or sorted targets)."""
        content, styles = self.plan(size)
        backbone = get_backbone(settings.model.backbone)
        term_bytes = sum(term.state_bytes(backbone, content, styles)
                         for term in loss_terms(settings))
        return Parts.of(settings.optimizer.name, getattr(settings.optimizer, "history_size", 0),
                        settings.model.backbone, term_bytes)

    def at_size(self, size: int, colors: str) -> "Scaled":
        """Everything one scale optimises against, `size` px on the content's long side."""
        content_size, style_sizes = self.plan(size)
        content = self.content.resize(content_size, Image.Resampling.LANCZOS)
        styles = [
            style.resize(planned, Image.Resampling.LANCZOS)
            for style, planned in zip(self.styles, style_sizes, strict=True)
        ]
        # init=style starts from the first style, stretched to the content's shape.
        stretched = to_array(self.styles[0].resize(content.size, Image.Resampling.LANCZOS))
        content_rgb = to_array(content)
        content_array, (stretched, *style_arrays) = color.prepare(
            colors, content_rgb, stretched, *(to_array(style) for style in styles)
        )
        masks = [
            np.asarray(m.resize(content.size, Image.Resampling.BILINEAR), np.float32) / 255.0
            for m in self.masks
        ]
        return Scaled(content_rgb, content_array, style_arrays, [s.size for s in styles],
                     stretched, masks)


@dataclass
class Scaled:
    """The pictures at one size, as arrays."""

    content_rgb: np.ndarray  # the content as the user sees it (colour modes recolour with it)
    content: np.ndarray  # ... and as the optimisation sees it
    styles: list[np.ndarray]
    style_sizes: list[tuple[int, int]]
    stretched: np.ndarray
    masks: list[np.ndarray]


def read_pictures(settings: RunConfig, images_dir: Path | None, cache_dir: Path,
                  content: Image.Image | None = None, style: Image.Image | None = None
                  ) -> Pictures:
    """The run's pictures; `content` and `style`, if given, instead of reading content.path (a
    frame, a picture in memory) and style.path."""
    if content is None:
        content_path = resolve_image(settings.content, "content", images_dir, cache_dir)
        content = read_rgb(content_path)
    else:
        content_path = Path(str(settings.content.path))
    style_paths, styles, blend, scales = [], [], [], []
    for source, weight, scale in style_sources(settings):
        if style is not None and not settings.styles:
            style_paths.append(Path(str(source.path)))
            styles.append(style)
        else:
            style_paths.append(resolve_image(source, "style", images_dir, cache_dir))
            styles.append(read_rgb(style_paths[-1]))
        blend.append(weight)
        scales.append(scale)
    masks = [
        read_mask(entry.mask, content, f"styles[{i}].mask")
        for i, entry in enumerate(settings.styles)
        if entry.mask
    ]
    return Pictures(content_path, content, style_paths, styles, blend, scales, masks)


def _check_sides(role: str, path: Path, original: tuple[int, int], planned: tuple[int, int],
                 setting: str, size: int, least: int) -> None:
    if min(planned) >= least:
        return
    need = _long_side_for_min_side(original, least)
    where = (f"{role} image {path.name} ({original[0]}x{original[1]}) becomes {planned[0]}x"
             f"{planned[1]} px at {setting}; both sides need at least {least} px")
    if need > MAX_SIZE:
        raise UserError(f"{where}, and even at the largest size ({MAX_SIZE} px on its long side) "
                        "its short side stays below that; crop it less elongated")
    fix = f"use a size of {need} or more" if role == "content" else (
        f"raise style_scale (or the style's scale) about {need / max(planned):.2g}x")
    raise UserError(f"{where}: {fix}, or crop it less elongated")


def _long_side_for_min_side(original: tuple[int, int], least: int) -> int:
    """The smallest long side at which the image's short side reaches `least` (MAX_SIZE + 1:
    none within the limit)."""
    low, high = 1, MAX_SIZE + 1  # the short side grows with the long one: bisect
    while low < high:
        middle = (low + high) // 2
        if min(fitted_size(original, middle)) >= least:
            high = middle
        else:
            low = middle + 1
    return low


def style_sources(settings: RunConfig) -> list[tuple[ImageConfig, float, float]]:
    """(image source, blend weight, scale) for each style: `styles` if given, else `style`."""
    if not settings.styles:
        return [(settings.style, 1.0, settings.style_scale)]
    return [
        (
            _style_preset(i, entry.preset) if entry.preset else ImageConfig(path=entry.path),
            entry.weight,
            entry.scale or settings.style_scale,
        )
        for i, entry in enumerate(settings.styles)
    ]


def _style_preset(index: int, name: str) -> ImageConfig:
    presets = sorted(p.stem for p in (CONF_DIR / "style").glob("*.yaml"))
    if name not in presets:
        raise UserError(f"styles[{index}].preset: unknown style preset '{name}'; "
                        f"choose one of {', '.join(presets)}")
    return preset_image("style", name)


def preset_image(role: str, name: str) -> ImageConfig:
    """The image preset conf/ROLE/NAME.yaml (role: content or style)."""
    preset = read_yaml(CONF_DIR / role / f"{name}.yaml")
    preset.pop("defaults", None)
    return ImageConfig(**preset)


def check_resume(checkpoint: Checkpoint, content: tuple[int, int]) -> None:
    """Refuse a resume whose snapshot is not `content` (width, height) px."""
    if checkpoint.picture.size != content:
        raise UserError(f"resume: snapshot {checkpoint.image} is not {content[0]}x{content[1]} "
                        "like the content; it was made at another size")


def resume_image(checkpoint: Checkpoint, settings: RunConfig) -> np.ndarray:
    """The snapshot to start from, in the space the optimisation works in."""
    # Snapshots are what users see; under colour modes the optimisation ran on another image.
    image, _ = color.prepare(settings.color.value, to_array(checkpoint.picture))
    return image


def initial_image(kind: str, content: np.ndarray, style: np.ndarray, seed: int,
                  backbone: str = DEFAULT_BACKBONE) -> np.ndarray:
    """The starting image, float32 (H, W, 3): `style` must already have the content's shape."""
    if kind == "content":
        return content
    if kind == "style":
        return style
    # White noise around the backbone's mean pixel, drawn from the run's seed.
    noise = np.random.default_rng(seed).standard_normal(content.shape, dtype=np.float32)
    return get_backbone(backbone).mean_rgb + noise
