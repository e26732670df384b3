"""The Python API: `nst_tf.stylize(content, style, **settings)`, no Hydra runtime needed.

It runs the pipeline the CLI runs, with the same checks and the same one-line errors (raised as
UserError), and reuses the compiled step across calls as a sweep does. A still is made in
memory: nothing touches the disk unless `output_dir` is given. Its config is composed with
OmegaConf alone (the schema, the presets, the settings), so threads need no lock for it.
"""

import tempfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from nst_tf.config import CONF_DIR, ImageConfig, RunConfig
from nst_tf.errors import StopRequest, UserError, handling_signals
from nst_tf.files import read_yaml
from nst_tf.hydra_setup import config_error_message

Picture = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class Result:
    """A finished run: the image, each loss per iteration, and the run's summary."""

    image: Image.Image | None  # None: the run failed (summary["reason"] says why), or a video
    losses: Mapping[str, list[float]]  # ((pass,) frame,) iteration, seconds, total, each term, size
    summary: Mapping[str, Any]
    output_dir: Path | None  # where its files are, if kept
    frames: Sequence[Image.Image] = ()  # a video's stylised frames, in order


def stylize(content: Picture, style: Picture, *, output_dir: str | Path | None = None,
            **settings: Any) -> Result:
    """Stylise `content` with `style`.

    Each picture is a preset name (e.g. "starry"), a file path, a PIL image or an (H, W, 3)
    array of 0..255 values. `settings` are config keys (see the README's table), nested ones as
    dicts: `stylize("tubingen", "starry", size=256, optimizer={"name": "adam"})`. The result
    stays in memory; with `output_dir` (a new folder) the run's files (result, losses,
    snapshots, summary) are written there too, as the CLI writes them.
    Raises UserError with the CLI's one line for a bad value; KeyboardInterrupt if stopped.
    """
    [result] = _run([{"content": content, "style": style, "output_dir": output_dir,
                      **settings}], batch_size=1)
    if result.summary["status"] != "ok":
        raise UserError(result.summary["reason"])
    return result


def stylize_video(content: str | Path, style: Picture, *,
                  output_dir: str | Path | None = None, **settings: Any) -> Result:
    """Stylise a clip (a video file, or a folder or glob of frames) frame by frame with the
    temporal loss (Ruder et al. 2016; the `video` settings in the README): `stylize` for
    clips. The Result has the `frames` and the losses per frame and iteration; with
    `output_dir` also result.mp4 there."""
    video = {**settings.pop("video", {}), "enabled": True}
    return stylize(content, style, output_dir=output_dir, video=video, **settings)


def stylize_batch(items: Sequence[Mapping[str, Any]], batch_size: int | str = "auto"
                  ) -> list[Result]:
    """Many runs, each item the keyword arguments `stylize` takes (`content`, `style`,
    `output_dir` and settings); items that can share a compiled step (same shapes, layers,
    backbone, precision, optimiser settings and iterations) run together, `batch_size` at a
    time ("auto": as many as a probe of the step found fastest here and fit in memory, at
    most 16; docs/BATCHING.md).

    Returns one Result per item, in order; a failed item's has no image and says why in
    `summary["reason"]`. Raises KeyboardInterrupt if stopped (every running item saved).
    """
    return _run(items, batch_size)


def _run(items: Sequence[Mapping[str, Any]], batch_size: int | str) -> list[Result]:
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
    from nst_tf import pipeline
    from nst_tf.compose import is_video, job

    with ExitStack() as cleanup:  # a clip's frames are made on disk: in a temp dir, removed
        jobs: list[Any] = []  # None: the item's settings did not compose
        refused, kept = {}, []
        for index, item in enumerate(items):
            settings = dict(item)
            pictures = {role: settings.pop(role) for role in ("content", "style")}
            output_dir = settings.pop("output_dir", None)
            kept.append(output_dir is not None)
            try:
                cfg, images = _config(settings, pictures)
            except UserError as error:
                jobs.append(None)
                refused[index] = {"status": "failed", "exit_code": 2, "reason": str(error)}
                continue
            out = Path(output_dir) if output_dir is not None else None
            if out is None and is_video(cfg):  # frames are made on disk, then read back
                out = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="nst-tf-")))
            if out is not None:
                out.mkdir(parents=True, exist_ok=True)
            # The keys given, as the CLI's overrides: what a resumed run may change.
            given = [f"{key}={value}" for key, value in _dotted(settings)]
            jobs.append(job(cfg, pipeline.Where(out, "output_dir", "nst_tf.stylize(...)"),
                            given, images))
        # Ctrl-C in the caller's main thread saves every running item (handlers put back after).
        with handling_signals(StopRequest()) as stop:
            ran = iter(pipeline.attempt_jobs([job for job in jobs if job], batch_size,
                                             stop=stop))
        summaries = [refused[i] if job is None else next(ran) for i, job in enumerate(jobs)]
        stopped = [s["reason"] for s in summaries if s["status"] == "interrupted"]
        if stopped:
            raise KeyboardInterrupt(stopped[0])
        return [_result(job, summary, keep)
                for job, summary, keep in zip(jobs, summaries, kept, strict=True)]


def _result(job: Any, summary: dict[str, Any], keep: bool) -> Result:
    """An item's result from memory (a clip's frames from its dir)."""
    from nst_tf.clips import frame_name
    from nst_tf.images import to_pixels
    from nst_tf.report import read_losses

    if job is None:
        return Result(None, {}, summary, None)
    out, image, frames, losses = job.where.out, None, [], {}
    if summary["status"] == "ok" and "video" in summary:
        frames = [_loaded(out / "frames" / frame_name(i))
                  for i in range(summary["video"]["frames"])]
        losses = read_losses(out / "losses.csv")
    elif job.image is not None and summary["status"] == "ok":
        image = Image.fromarray(to_pixels(job.image))
    if job.losses is not None and not frames:
        names = job.losses.columns
        losses = {name: [float(row[name]) for row in job.losses.rows] for name in names}
    return Result(image, losses, summary, out if keep else None, frames)


def _loaded(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return image.copy()


def _config(settings: Mapping[str, Any], pictures: Mapping[str, Picture]
            ) -> tuple[DictConfig, dict[str, Image.Image]]:
    """The config the CLI would compose, with `settings` merged on its schema, and the
    pictures given as images or arrays (kept in memory)."""
    from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS
    from nst_tf.pictures import preset_image
    from nst_tf.plugins import load_plugins

    load_plugins()  # their optimisers, backbones and terms, as the CLI has them
    choices = _default_choices()
    settings = dict(settings)
    for group in _GROUPS:  # a name or {"name": ...} picks the group's preset (and schema)
        given = settings.get(group)
        if isinstance(given, str) or (isinstance(given, Mapping) and "name" in given):
            choices[group] = given if isinstance(given, str) else given["name"]
            settings[group] = {} if isinstance(given, str) else given
    try:
        if choices["optimizer"] not in OPTIMIZER_SCHEMAS:
            raise UserError(f"unknown optimizer preset '{choices['optimizer']}'; choose one of "
                            f"{', '.join(sorted(OPTIMIZER_SCHEMAS))}")
        cfg = OmegaConf.structured(RunConfig)
        cfg.optimizer = OmegaConf.structured(OPTIMIZER_SCHEMAS[choices["optimizer"]])
        for group in _GROUPS:
            cfg[group] = OmegaConf.merge(cfg[group], _group_preset(group, choices[group]))
        images = {}
        for role, picture in pictures.items():
            if _is_preset(role, picture):
                cfg[role] = OmegaConf.structured(preset_image(role, picture))
            elif isinstance(picture, str | Path):
                cfg[role] = OmegaConf.structured(ImageConfig(path=str(Path(picture).expanduser())))
            else:
                images[role] = _as_image(role, picture)
                cfg[role] = OmegaConf.structured(ImageConfig(path=f"<{role} in memory>"))
        return OmegaConf.merge(cfg, settings), images
    except OmegaConfBaseException as error:
        raise UserError(config_error_message(error)) from None


_GROUPS = ("optimizer", "style_loss")  # the config groups whose presets settings choose


def _default_choices() -> dict[str, str]:
    """The presets conf/config.yaml's defaults list picks for each group."""
    return {key: value for entry in read_yaml(CONF_DIR / "config.yaml")["defaults"]
            if isinstance(entry, dict) for key, value in entry.items()}


def _group_preset(group: str, name: str) -> dict[str, Any]:
    """conf/GROUP/NAME.yaml's values (an optimiser a plug-in adds may have none)."""
    path = CONF_DIR / group / f"{name}.yaml"
    if not path.is_file():
        if group == "optimizer":
            return {}
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        raise UserError(f"unknown {group} preset '{name}'; choose one of {', '.join(options)}")
    preset = read_yaml(path) or {}
    preset.pop("defaults", None)
    return preset


def _dotted(settings: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """Nested settings as (dotted key, value) pairs."""
    pairs = []
    for key, value in settings.items():
        if isinstance(value, Mapping):
            pairs += _dotted(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def _is_preset(role: str, picture: Picture) -> bool:
    return isinstance(picture, str) and (CONF_DIR / role / f"{picture}.yaml").is_file()


def _as_image(role: str, picture: Picture) -> Image.Image:
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(np.clip(np.asarray(picture), 0, 255).astype(np.uint8))
    if not isinstance(picture, Image.Image):
        raise UserError(f"{role}: give a preset name, a file path, a PIL image or an "
                        f"(H, W, 3) array, not {type(picture).__name__}")
    return picture.convert("RGB")
