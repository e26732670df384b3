"""The pipeline every entry uses (the Hydra app, the benchmark): config -> images -> backbone
features -> loss terms -> optimiser loop -> outputs, with what one process can reuse between runs
(weights, models, the compiled step) kept here."""

import dataclasses
import glob
import importlib.util
import logging
import math
import shutil
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from nst_tf import color
from nst_tf import precision as precision_probe
from nst_tf.backbones import get_backbone
from nst_tf.cache import default_cache_dir
from nst_tf.config import (
    CONF_DIR,
    DEFAULT_BACKBONE,
    MIN_SIZE,
    ImageConfig,
    LossScale,
    Precision,
    RunConfig,
    layer_weights,
    validate,
)
from nst_tf.errors import UserError, WriteError, warn
from nst_tf.images import (
    IMAGE_SUFFIXES,
    fitted_size,
    read_mask,
    read_rgb,
    resolve_image,
    save_png,
    to_array,
)
from nst_tf.losses import EXTRA_TERMS, LossTerm, paper_terms
from nst_tf.memory import check_memory
from nst_tf.model import FeatureExtractor
from nst_tf.normalize import normalized_weights
from nst_tf.report import plot_losses, read_losses, write_summary
from nst_tf.resume import Checkpoint, load_checkpoint, resumed_config
from nst_tf.rundir import SETTINGS, check_run_dir, write_settings
from nst_tf.transfer import (
    STOP_SIGNALS,
    Diverged,
    LossLog,
    Progress,
    ProgressBar,
    Snapshots,
    Stopped,
    StyleTransfer,
    TensorBoardLog,
    Weights,
    optimise,
)
from nst_tf.weights import VGGWeights, load_weights

log = logging.getLogger("nst_tf")

# Built once per process and reused by every run that can use them (a sweep's jobs).
_weights: dict[str, VGGWeights] = {}
_extractors: dict[tuple, FeatureExtractor] = {}
_transfer: dict[tuple, StyleTransfer] = {}


@dataclass(frozen=True)
class Where:
    """Where a run writes, and how its user changes that: the setting that chooses the run dir
    (e.g. hydra.run.dir) and the command that continues a stopped run."""

    out: Path
    dir_key: str
    command: str
    keep_failures: bool = False  # record a failed run's summary even if it never started


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

    def check(self, settings: RunConfig) -> None:
        """Refuse, before anything is allocated, images too thin for VGG19 or too big to fit."""
        key = "scales" if settings.scales else "size"
        for size in settings.scales or [settings.size]:
            content, styles = self.plan(size)
            _check_sides("content", self.content_path, self.content.size, content,
                         f"{key}={size}", size)
            for path, style, planned in zip(self.style_paths, self.styles, styles, strict=True):
                _check_sides("style", path, style.size, planned, f"{key}={size}", size)
        size = max(settings.scales or [settings.size])
        content, styles = self.plan(size)
        history = getattr(settings.optimizer, "history_size", 0)
        check_memory(key, size, content, max(w * h for w, h in styles), settings.optimizer.name,
                     history)

    def at_size(self, size: int, colors: str) -> "Stage":
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
        return Stage(content_rgb, content_array, style_arrays, [s.size for s in styles],
                     stretched, masks)


@dataclass
class Stage:
    content_rgb: np.ndarray  # the content as the user sees it (colour modes recolour with it)
    content: np.ndarray  # ... and as the optimisation sees it
    styles: list[np.ndarray]
    style_sizes: list[tuple[int, int]]
    stretched: np.ndarray
    masks: list[np.ndarray]


def read_pictures(settings: RunConfig, images_dir: Path | None, cache_dir: Path) -> Pictures:
    content_path = resolve_image(settings.content, "content", images_dir, cache_dir)
    content = read_rgb(content_path)
    style_paths, styles, blend, scales = [], [], [], []
    for source, weight, scale in style_sources(settings):
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
                 setting: str, size: int) -> None:
    if min(planned) >= MIN_SIZE:
        return
    need = math.ceil(size * MIN_SIZE / min(planned))
    fix = f"use a size of {need} or more" if role == "content" else (
        f"raise style_scale (or the style's scale) about {need / size:.2g}x")
    raise UserError(
        f"{role} image {path.name} ({original[0]}x{original[1]}) becomes {planned[0]}x"
        f"{planned[1]} px at {setting}; both sides need at least {MIN_SIZE} px: {fix}, "
        "or crop it less elongated"
    )


def run(cfg: DictConfig, where: Where, overrides: Sequence[str], summary: dict[str, Any]
        ) -> dict[str, Any]:
    """One style transfer into `where.out`, filling `summary` as it goes (a failed run's
    record)."""
    out = where.out
    checkpoint = load_checkpoint(cfg.resume) if cfg.resume else None
    if checkpoint:
        cfg = resumed_config(cfg, checkpoint, overrides)
    settings = validate(cfg)
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("tensorboard=true needs the tensorboard package; "
                        "pip install 'nst-tf[tensorboard]', or drop tensorboard=true")
    names = ["total", *(term.name for term in loss_terms(settings))]  # checks extra terms too
    if settings.objective not in names:
        raise UserError(f"objective={settings.objective} is not a loss of this run; use one of "
                        f"{', '.join(names)}")
    check_run_dir(out, where.dir_key)
    cache_dir = Path(settings.paths.cache).expanduser() if settings.paths.cache else None
    cache_dir = cache_dir or default_cache_dir()
    images_dir = Path(settings.paths.images).expanduser() if settings.paths.images else None
    summary["cache"] = str(cache_dir)
    pictures = read_pictures(settings, images_dir, cache_dir)
    pictures.check(settings)
    vgg = model_weights(settings, cache_dir)
    log.info("weights: %s (sha256 %s)", vgg.source, vgg.digest[:12])
    settings, summary["precision"] = resolve_precision(settings, vgg, cache_dir)
    weights = loss_weights(settings)
    colors = settings.color.value
    sizes = settings.scales or [settings.size]
    summary.update({
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "weights": {"source": vgg.source, "digest": vgg.digest},
        "content": {"path": str(pictures.content_path), "size": list(pictures.content.size)},
        "styles": [
            {"path": str(path), "weight": weight, "scale": scale}
            for path, weight, scale in zip(
                pictures.style_paths, pictures.blend, pictures.scales, strict=True
            )
        ],
        "loss_weights": asdict(weights),
        "tensorflow": tf.__version__,
        "resumed_from": str(checkpoint.image) if checkpoint else None,
        "stages": [],
    })
    keras.utils.set_random_seed(settings.seed)
    first, seconds, image, log_rows = 0, 0.0, None, None
    for index, size in enumerate(sizes):
        stage = pictures.at_size(size, colors)
        shape = stage.content.shape[:2]
        todo = (settings.scale_iterations or [settings.iterations] * len(sizes))[index]
        if image is not None:  # coarse to fine: the previous scale's result, upsampled
            image = tf.image.resize(image, shape, method="bicubic").numpy()
        elif checkpoint:
            image, first = resume_image(checkpoint, settings, stage.content)
            todo, seconds = settings.iterations - first, checkpoint.seconds
        else:
            image = initial_image(settings.init.value, stage.content, stage.stretched,
                                  settings.seed, settings.model.backbone)
        log.info("scale %d/%d: content %dx%d; styles %s", index + 1, len(sizes), shape[1],
                 shape[0], ", ".join(f"{w}x{h}" for w, h in stage.style_sizes))
        transfer, reused = get_transfer(settings, vgg, shape, len(stage.masks))
        transfer.start(stage.content, list(zip(stage.styles, pictures.blend, strict=True)),
                       image, weights, stage.masks)
        summary["stages"].append({
            "size": size, "content_size": [shape[1], shape[0]],
            "style_sizes": [list(s) for s in stage.style_sizes],
            "compile_seconds": transfer.compile_seconds, "reused_compiled_step": reused,
        })
        if log_rows is None:  # everything is checked and built: the run now owns `out`
            write_settings(out, cfg)
            log_rows = LossLog(out / "losses.csv", transfer.value_names,
                               checkpoint.rows if checkpoint else ())

        def show(image: np.ndarray, stage: Stage = stage) -> np.ndarray:
            return color.present(colors, image, stage.content_rgb)

        callbacks = [log_rows, Snapshots(out / "snapshots", settings.save_every, show)]
        if settings.tensorboard:
            callbacks.append(TensorBoardLog(out / "tensorboard", settings.save_every, show))
        if settings.progress:
            callbacks.append(ProgressBar(todo, description=f"{out.name} {size}px"))
        try:
            final = optimise(transfer, todo, callbacks, first, seconds)
        except Stopped as stop:
            _finish(out, show(transfer.result()), summary, stop.progress, "interrupted")
            raise
        except Diverged as diverged:
            _finish(out, None, summary, diverged.progress, "diverged")
            raise
        image = transfer.result()
        if len(sizes) > 1:
            save_png(out / f"scale_{size:05d}.png", show(image))
        first, seconds = final.iteration, final.seconds
    summary["compile_seconds"] = sum(s["compile_seconds"] for s in summary["stages"])
    summary["reused_compiled_step"] = all(s["reused_compiled_step"] for s in summary["stages"])
    _finish(out, show(image), summary, final, "ok")
    log.info("%d iterations in %.1f s: total %.4g, content %.4g, style %.4g; wrote %s",
             final.iteration, final.seconds, final.values["total"], final.values["content"],
             final.values["style"], out / "result.png")
    return summary


def _finish(out: Path, image: np.ndarray | None, summary: dict[str, Any],
            progress: Progress | None, status: str) -> None:
    """The run's outputs, the result first: it is what a full disk must not cost (attempt()
    writes the summary last)."""
    if image is not None:
        save_png(out / "result.png", image)
    if (out / "losses.csv").exists():
        plot_losses(read_losses(out / "losses.csv"), out / "loss_curve.png")
    summary.update(status=status, interrupted=status == "interrupted")
    if progress is not None:
        summary["iterations_done"] = progress.iteration
        summary["final"] = {"iteration": progress.iteration, "seconds": progress.seconds,
                            **progress.values}


def attempt(cfg: DictConfig, where: Where, overrides: Sequence[str]) -> dict[str, Any]:
    """Run, and turn however it ended into summary.json with `status`, `reason` and
    `exit_code`, also returned. A stop signal before the loop stops the run at once. A failed
    run leaves no record unless it had started or `where.keep_failures` (a sweep's table reads
    it). Unexpected errors propagate. A folder or glob as content.path runs once per image."""
    out = where.out
    summary: dict[str, Any] = {"status": "failed", "overrides": list(overrides)}

    def stop_now(signum: int, _: Any) -> None:
        raise Stopped(signum)

    main = threading.current_thread() is threading.main_thread()  # signals reach only it
    previous = {signum: signal.signal(signum, stop_now)
                for signum in (STOP_SIGNALS if main else ())}
    try:
        inputs = content_inputs(cfg)
        if inputs is not None:
            summary = _attempt_each(cfg, where, overrides, inputs)
        else:
            run(cfg, where, overrides, summary)
            summary.update(reason=None, exit_code=0)
            write_summary(out / "summary.json", summary)
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        summary.update(status="interrupted", exit_code=stop.exit_code)
        if stop.progress is None:
            summary["reason"] = f"stopped by {name} before the first step; nothing was saved"
        else:
            summary["reason"] = (f"stopped by {name} at iteration {stop.progress.iteration}; "
                                 f"saved the image, a snapshot and the losses in {out}")
            if not summary["config"]["scales"]:
                summary["reason"] += (f"; continue with: {where.command} resume={out} "
                                      f"iterations={summary['config']['iterations']}")
    except Diverged as diverged:
        kept = (f"kept the last finite image as snapshots/iter_{diverged.progress.iteration:05d}"
                ".png, no result.png" if diverged.progress and diverged.progress.iteration
                else "no image was worth keeping")
        summary.update(status="diverged", exit_code=3, reason=(
            f"{diverged}; {kept}; lower optimizer.learning_rate or the loss weights"))
    except (UserError, OSError) as error:
        summary.update(exit_code=2, reason=_user_message(error, where, summary.get("cache")))
    except (MemoryError, tf.errors.ResourceExhaustedError):
        summary.update(exit_code=2, reason="ran out of memory; use a smaller size, a smaller "
                       "optimizer.history_size, or scales=[...]")
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if summary["status"] != "ok" and (where.keep_failures or (out / SETTINGS).exists()):
        write_record(out, summary)
    return summary


def content_inputs(cfg: DictConfig) -> list[Path] | None:
    """The images a folder or glob in content.path names, sorted; None for one image."""
    spec = OmegaConf.select(cfg, "content.path")
    if not spec or not (Path(spec).expanduser().is_dir() or any(c in spec for c in "*?[")):
        return None
    folder = Path(spec).expanduser()
    found = folder.iterdir() if folder.is_dir() else map(Path, glob.glob(str(folder)))
    images = sorted(p for p in found if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise UserError(f"content.path={spec} names no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "give a folder or glob that has some, or one image")
    return images


def _attempt_each(cfg: DictConfig, where: Where, overrides: Sequence[str], inputs: list[Path]
                  ) -> dict[str, Any]:
    """One run per input, each in its own dir `OUT/NAME/`, its result also as `OUT/NAME.png`;
    images of one shape share the compiled step. A stop signal ends the whole batch."""
    check_run_dir(where.out, where.dir_key)
    stems = [p.stem for p in inputs]
    names = [p.stem if stems.count(p.stem) == 1 else p.name for p in inputs]
    summary: dict[str, Any] = {"overrides": list(overrides), "inputs": []}
    for path, name in zip(inputs, names, strict=True):
        one = cfg.copy()
        one.content = OmegaConf.structured(ImageConfig(path=str(path)))
        (where.out / name).mkdir(parents=True, exist_ok=True)
        done = attempt(one, dataclasses.replace(where, out=where.out / name), overrides)
        summary["inputs"].append({"path": str(path), "dir": name, "status": done["status"],
                                  "reason": done["reason"], "final": done.get("final")})
        if done["status"] == "ok":
            shutil.copyfile(where.out / name / "result.png", where.out / f"{name}.png")
        if done["status"] == "interrupted":
            summary.update(status="interrupted", exit_code=done["exit_code"],
                           reason=f"{name}: {done['reason']}")
            break
    else:
        finals = [entry["final"] for entry in summary["inputs"] if entry["final"]]
        if finals:  # what a sweeper reads of a batch: its mean losses
            summary["final"] = {key: float(np.mean([f[key] for f in finals])) for key in finals[0]}
        bad = [entry for entry in summary["inputs"] if entry["status"] != "ok"]
        summary.update(status="failed" if bad else "ok", exit_code=2 if bad else 0, reason=(
            f"{len(bad)} of {len(inputs)} images failed, e.g. {bad[0]['dir']}: "
            f"{bad[0]['reason']}" if bad else None))
    write_record(where.out, summary)
    return summary


def write_record(out: Path, summary: dict[str, Any]) -> None:
    """Best effort: the summary of a run that did not finish, for the sweep's table and figure."""
    try:
        write_summary(out / "summary.json", summary)
    except UserError:
        pass  # the run's failure is reported; a full disk must not hide it


def _user_message(error: Exception, where: Where, cache: str | None) -> str:
    if isinstance(error, OSError) and error.filename is None:
        raise error  # not about a file: a bug, with its traceback
    if not isinstance(error, OSError | WriteError):
        return str(error)
    path = Path(error.path if isinstance(error, WriteError) else error.filename)
    reason = error.reason if isinstance(error, WriteError) else error.strerror
    if path.is_relative_to(where.out):
        fix = f"free some space or choose another dir with {where.dir_key}=..."
    elif cache and path.is_relative_to(cache):
        fix = "free some space or choose another cache dir with paths.cache=..."
    else:
        fix = "check that its folder exists, is writable and has space"
    return f"cannot write {path} ({reason}); {fix}"


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
    preset = OmegaConf.load(CONF_DIR / role / f"{name}.yaml")
    preset.pop("defaults", None)
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ImageConfig), preset))


def resume_image(
    checkpoint: Checkpoint, settings: RunConfig, content: np.ndarray
) -> tuple[np.ndarray, int]:
    """The snapshot to start from, in the space the optimisation works in, and its iteration."""
    if checkpoint.iteration >= settings.iterations:
        raise UserError(
            f"resume: {checkpoint.run_dir} already ran {checkpoint.iteration} iterations; "
            f"ask for more with iterations=N (N > {checkpoint.iteration})"
        )
    image = to_array(checkpoint.picture)
    if image.shape != content.shape:
        raise UserError(f"resume: snapshot {checkpoint.image} is not {content.shape[1]}x"
                        f"{content.shape[0]} like the content; it was made at another size")
    # Snapshots are what users see; under colour modes the optimisation ran on another image.
    image, _ = color.prepare(settings.color.value, image)
    return image, checkpoint.iteration


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


def loss_weights(settings: RunConfig) -> Weights:
    """α, β, the TV weight, the extra terms' weights and the per-layer weights, by term."""
    # Unless given: the paper weighs its L layers 1/L each; the authors' code, 1 (and 1/N²
    # inside each style layer's loss).
    each = 1.0 if settings.loss_scale == LossScale.reference else None
    paper = Weights.paper(
        alpha=settings.alpha,
        beta=settings.beta,
        tv=settings.tv_weight,
        content_layers=layer_weights(settings.content_layers, settings.content_layer_weights,
                                     each),
        style_layers=layer_weights(settings.style_layers, settings.style_layer_weights, each),
    )
    return Weights({**paper.terms, **settings.terms}, paper.layers)


def loss_terms(settings: RunConfig, regions: int = 0) -> list[LossTerm]:
    """The paper's terms, then the extra ones the config names."""
    unknown = sorted(set(settings.terms) - set(EXTRA_TERMS))
    if unknown:
        known = ", ".join(EXTRA_TERMS) or "none"
        raise UserError(f"terms.{unknown[0]}: no such loss term; registered extra terms: {known}")
    extra = [EXTRA_TERMS[name](settings) for name in settings.terms]
    reference = settings.loss_scale == LossScale.reference
    return [*paper_terms(settings.content_layers, settings.style_layers, regions, reference),
            *extra]


def model_weights(settings: RunConfig, cache_dir: Path) -> VGGWeights:
    """The configured backbone's weights, normalised if asked; loaded once per process."""
    model = settings.model
    spec = f"{model.backbone} {model.weights}"
    if spec not in _weights:
        _weights[spec] = load_weights(model.weights, cache_dir, model.backbone)
    if not model.normalize:
        return _weights[spec]
    key = f"{spec} normalised {model.pooling.value} {model.calibration}"
    if key not in _weights:
        _weights[key] = normalized_weights(
            _weights[spec], model.pooling.value, model.calibration, cache_dir
        )
    return _weights[key]


def resolve_precision(settings: RunConfig, weights: VGGWeights, cache_dir: Path
                      ) -> tuple[RunConfig, dict[str, Any]]:
    """The settings with precision=auto replaced by the faster precision here, and a record of
    the choice; an explicit bf16 that is slower here gets one warning line."""
    requested = settings.precision.value
    if requested == "fp32":
        return settings, {"requested": requested, "used": requested}

    def probe(precision: str) -> float:
        trial = dataclasses.replace(settings, precision=Precision(precision))
        size = precision_probe.PROBE_SIZE
        return precision_probe.step_seconds(build_transfer(trial, weights, (size, size)),
                                            loss_weights(settings))

    choice = precision_probe.choose(probe, cache_dir)
    used = choice.used if requested == "auto" else requested
    speedup = choice.bf16_speedup
    ratio = "" if speedup is None else f"; bf16 step {speedup:.2f}x as fast as fp32 here"
    log.info("precision=%s: using %s (%s, %s%s)", requested, used, choice.device, choice.source,
             ratio)
    if requested == "bf16" and speedup is not None and speedup < 1:
        warn(f"precision=bf16 is {1 / speedup:.1f}x slower than fp32 on this machine "
             f"({choice.device}); precision=auto or fp32 is faster")
    return dataclasses.replace(settings, precision=Precision(used)), {
        "requested": requested, "used": used, "bf16_speedup": speedup, "device": choice.device,
        "decided": choice.source}


def optimizer_params(settings: RunConfig) -> dict[str, Any]:
    """The optimiser's keyword arguments from its config node (enums as their values)."""
    return {k: getattr(v, "value", v) for k, v in asdict(settings.optimizer).items()
            if k != "name"}


def extractor_for(settings: RunConfig, weights: VGGWeights) -> FeatureExtractor:
    """The backbone with the configured pooling and precision, cut after the deepest layer the
    losses use; built once per process."""
    if settings.precision == Precision.auto:
        raise ValueError("precision=auto is a choice to make first: see resolve_precision")
    layers = tuple(dict.fromkeys(name for term in loss_terms(settings) for name in term.layers))
    key = (weights.backbone, weights.digest, settings.model.pooling.value,
           settings.precision.value, layers)
    if key not in _extractors:
        _extractors[key] = FeatureExtractor(weights.arrays, settings.model.pooling.value, layers,
                                            settings.precision.value, weights.backbone)
    return _extractors[key]


def build_transfer(settings: RunConfig, weights: VGGWeights, shape: tuple[int, int],
                   regions: int = 0) -> StyleTransfer:
    """A new compiled step for these settings and image shape (traced and run once)."""
    return StyleTransfer(
        extractor_for(settings, weights),
        loss_terms(settings, regions),
        shape,
        settings.optimizer.name,
        optimizer_params(settings),
        jit_compile=settings.jit_compile,
    )


def get_transfer(
    settings: RunConfig, weights: VGGWeights, shape: tuple[int, int], regions: int = 0
) -> tuple[StyleTransfer, bool]:
    """The compiled step for these settings and image shape, and whether it was reused."""
    key = (weights.backbone, weights.digest, settings.model.pooling.value,
           settings.precision.value, tuple(settings.content_layers),
           tuple(settings.style_layers), tuple(settings.terms), settings.loss_scale, shape,
           settings.optimizer.name, tuple(sorted(optimizer_params(settings).items())),
           settings.jit_compile, regions)
    if key in _transfer:
        log.info("reusing the compiled step")
        return _transfer[key], True
    started = time.perf_counter()
    _transfer.clear()  # one compiled step at a time: each holds image-sized state
    _transfer[key] = build_transfer(settings, weights, shape, regions)
    log.info("built the model and compiled the step in %.1f s", time.perf_counter() - started)
    return _transfer[key], False


