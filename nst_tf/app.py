"""The Hydra entry: config -> images -> features -> losses -> optimiser loop -> outputs."""

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path

import hydra
import keras
import numpy as np
import tensorflow as tf
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from nst_tf import color
from nst_tf.cache import default_cache_dir
from nst_tf.config import (
    ImageConfig,
    RunConfig,
    layer_weights,
    register_configs,
    validate,
)
from nst_tf.errors import UserError, fail
from nst_tf.images import (
    fit_long_side,
    read_mask,
    read_rgb,
    resolve_image,
    save_png,
    to_array,
)
from nst_tf.model import IMAGENET_MEAN_BGR, FeatureExtractor
from nst_tf.normalize import normalized_weights
from nst_tf.report import LossLog, write_summary
from nst_tf.resume import Checkpoint, load_checkpoint, resumed_config
from nst_tf.transfer import (
    ProgressBar,
    Snapshots,
    StyleTransfer,
    Weights,
    optimise,
)
from nst_tf.weights import VGGWeights, load_weights

log = logging.getLogger("nst_tf")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Built once per process and reused by every job of a sweep that can use them.
_weights: dict[str, VGGWeights] = {}
_extractors: dict[tuple, FeatureExtractor] = {}
_transfer: dict[tuple, StyleTransfer] = {}


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

    def at_size(self, size: int, colors: str) -> "Stage":
        """Everything one scale optimises against, `size` px on the content's long side."""
        content = fit_long_side(self.content, size)
        styles = [
            fit_long_side(style, max(1, round(max(content.size) * scale)))
            for style, scale in zip(self.styles, self.scales, strict=True)
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


def run(cfg: DictConfig) -> dict[str, object]:
    """One style transfer, written to Hydra's output dir; returns its summary."""
    checkpoint = load_checkpoint(cfg.resume) if cfg.resume else None
    if checkpoint:
        cfg = resumed_config(cfg, checkpoint, HydraConfig.get().overrides.task)
    settings = validate(cfg)
    out = Path(HydraConfig.get().runtime.output_dir)
    _check_output_dir(out)
    cache_dir = Path(settings.paths.cache).expanduser() if settings.paths.cache else None
    cache_dir = cache_dir or default_cache_dir()
    images_dir = Path(settings.paths.images).expanduser() if settings.paths.images else None
    pictures = read_pictures(settings, images_dir, cache_dir)
    vgg = vgg_weights(settings, cache_dir)
    log.info("weights: %s (sha256 %s)", vgg.source, vgg.digest[:12])
    weights = Weights(
        alpha=settings.alpha,
        beta=settings.beta,
        tv=settings.tv_weight,
        content_layers=layer_weights(settings.content_layers, settings.content_layer_weights),
        style_layers=layer_weights(settings.style_layers, settings.style_layer_weights),
    )
    colors = settings.color.value
    sizes = settings.scales or [settings.size]
    summary: dict[str, object] = {
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
    }
    keras.utils.set_random_seed(settings.seed)
    log_rows = LossLog(out / "losses.csv", out / "loss_curve.png",
                       checkpoint.rows if checkpoint else ())
    first, seconds, image = 0, 0.0, None
    for index, size in enumerate(sizes):
        stage = pictures.at_size(size, colors)
        shape = stage.content.shape[:2]
        todo = settings.iterations  # per scale
        if image is not None:  # coarse to fine: the previous scale's result, upsampled
            image = tf.image.resize(image, shape, method="bicubic").numpy()
        elif checkpoint:
            image, first = resume_image(checkpoint, settings, stage.content)
            todo, seconds = settings.iterations - first, checkpoint.seconds
        else:
            image = initial_image(settings.init.value, stage.content, stage.stretched,
                                  settings.seed)
        log.info("scale %d/%d: content %dx%d; styles %s", index + 1, len(sizes), shape[1],
                 shape[0], ", ".join(f"{w}x{h}" for w, h in stage.style_sizes))
        transfer, reused = _get_transfer(settings, vgg, shape, len(stage.masks))
        transfer.start(stage.content, list(zip(stage.styles, pictures.blend, strict=True)),
                       image, weights, stage.masks)
        summary["stages"].append({
            "size": size, "content_size": [shape[1], shape[0]],
            "style_sizes": [list(s) for s in stage.style_sizes],
            "compile_seconds": transfer.compile_seconds, "reused_compiled_step": reused,
        })

        def show(image: np.ndarray, stage: Stage = stage) -> np.ndarray:
            return color.present(colors, image, stage.content_rgb)

        callbacks = [log_rows, Snapshots(out / "snapshots", settings.save_every, show)]
        if settings.progress:
            callbacks.append(ProgressBar(todo, description=f"{out.name} {size}px"))
        try:
            final = optimise(transfer, todo, callbacks, first, seconds)
        except KeyboardInterrupt:
            done = first + int(transfer.updates.numpy())
            _finish(out, show(transfer.result()), summary, done, interrupted=True)
            raise
        image = transfer.result()
        if len(sizes) > 1:
            save_png(out / f"scale_{size:05d}.png", show(image))
        first, seconds = final.iteration, final.seconds
    summary["compile_seconds"] = sum(s["compile_seconds"] for s in summary["stages"])
    summary["reused_compiled_step"] = all(s["reused_compiled_step"] for s in summary["stages"])
    summary["final"] = {"iteration": final.iteration, "seconds": final.seconds, **final.values}
    _finish(out, show(image), summary, final.iteration, interrupted=False)
    log.info("%d iterations in %.1f s: total %.4g, content %.4g, style %.4g; wrote %s",
             final.iteration, final.seconds, final.values["total"], final.values["content"],
             final.values["style"], out / "result.png")
    return summary


def _finish(out: Path, image: np.ndarray, summary: dict, done: int, interrupted: bool) -> None:
    summary["interrupted"] = interrupted
    summary["iterations_done"] = done
    save_png(out / "result.png", image)
    write_summary(out / "summary.json", summary)


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
    preset = OmegaConf.load(CONF_DIR / "style" / f"{name}.yaml")
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
    image = to_array(read_rgb(checkpoint.image))
    if image.shape != content.shape:
        raise UserError(f"resume: snapshot {checkpoint.image} is not {content.shape[1]}x"
                        f"{content.shape[0]} like the content; it was made at another size")
    # Snapshots are what users see; under colour modes the optimisation ran on another image.
    image, _ = color.prepare(settings.color.value, image)
    return image, checkpoint.iteration


def initial_image(kind: str, content: np.ndarray, style: np.ndarray, seed: int) -> np.ndarray:
    """The starting image, float32 (H, W, 3): `style` must already have the content's shape."""
    if kind == "content":
        return content
    if kind == "style":
        return style
    # White noise around the ImageNet mean pixel, drawn from the run's seed.
    noise = np.random.default_rng(seed).standard_normal(content.shape, dtype=np.float32)
    return IMAGENET_MEAN_BGR[::-1] + noise


def _check_output_dir(out: Path) -> None:
    if (out / "result.png").exists():
        raise UserError(
            f"output dir {out} already holds a result; choose a new one with hydra.run.dir=..."
        )
    probe = out / ".write-test"
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise UserError(
            f"cannot write to output dir {out} ({error.strerror}); "
            "choose a writable one with hydra.run.dir=..."
        ) from error


def vgg_weights(settings: RunConfig, cache_dir: Path) -> VGGWeights:
    """The configured weights, normalised if asked; loaded once per process."""
    model = settings.model
    spec = model.weights
    if spec not in _weights:
        _weights[spec] = load_weights(spec, cache_dir)
    if not model.normalize:
        return _weights[spec]
    key = f"{spec} normalised {model.pooling.value} {model.calibration}"
    if key not in _weights:
        _weights[key] = normalized_weights(
            _weights[spec], model.pooling.value, model.calibration, cache_dir
        )
    return _weights[key]


def _get_transfer(
    settings: RunConfig, weights: VGGWeights, shape: tuple[int, int], regions: int
) -> tuple[StyleTransfer, bool]:
    layers = tuple(dict.fromkeys([*settings.content_layers, *settings.style_layers]))
    model_key = (weights.digest, settings.model.pooling.value, settings.precision.value, layers)
    optimizer = {
        k: (v.value if hasattr(v, "value") else v)
        for k, v in asdict(settings.optimizer).items()
        if k != "name"
    }
    key = (*model_key, tuple(settings.content_layers), tuple(settings.style_layers), shape,
           settings.optimizer.name, tuple(sorted(optimizer.items())), settings.jit_compile,
           regions)
    if key in _transfer:
        log.info("reusing the compiled step")
        return _transfer[key], True
    started = time.perf_counter()
    if model_key not in _extractors:
        _extractors[model_key] = FeatureExtractor(
            weights.arrays, settings.model.pooling.value, layers, settings.precision.value
        )
    _transfer.clear()  # one compiled step at a time: each holds image-sized state
    _transfer[key] = StyleTransfer(
        _extractors[model_key],
        settings.content_layers,
        settings.style_layers,
        shape,
        settings.optimizer.name,
        optimizer,
        jit_compile=settings.jit_compile,
        regions=regions,
    )
    log.info("built the model and compiled the step in %.1f s", time.perf_counter() - started)
    return _transfer[key], False


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base=None)
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg)
    except UserError as error:
        fail(str(error))  # here, before Hydra reports a failed job in several lines


def main() -> None:
    """Console entry: run Hydra, and turn users' mistakes into one line and exit code 2."""
    # Let errors reach us instead of Hydra's multi-line report.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    register_configs()
    try:
        _hydra_main()
    except MissingConfigException as error:
        fail(_missing_config_message(error))
    except (HydraException, OmegaConfBaseException) as error:
        fail(_config_message(error))
    except OSError as error:
        if error.filename is None:
            raise
        fail(f"cannot write {error.filename} ({error.strerror}); "
              "choose a writable output dir with hydra.run.dir=...")
    except KeyboardInterrupt:
        print("nst-tf: interrupted; the current image and losses are saved", file=sys.stderr)
        sys.exit(130)


def _missing_config_message(error: MissingConfigException) -> str:
    name = error.missing_cfg_file or ""
    group, _, option = name.rpartition("/")
    options = [o for o in (error.options or []) if not o.endswith("schema")]
    if group:
        return f"unknown {group} preset '{option}'; choose one of {', '.join(options)}"
    return str(error).splitlines()[0]


def _config_message(error: Exception) -> str:
    # The cause (an OmegaConf error) names the key; its first line says what is wrong.
    cause = error.__cause__ if isinstance(error.__cause__, OmegaConfBaseException) else error
    key = getattr(cause, "full_key", None)
    first = str(cause).splitlines()[0].strip()
    schema = getattr(cause, "object_type", None)
    if "not in" in first and key and is_dataclass(schema):
        known = ", ".join(sorted(f.name for f in fields(schema)))
        return f"unknown config key '{key}'; known keys: {known}"
    return f"{key}: {first}" if key else first
