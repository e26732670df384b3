"""Where the drivers (the Hydra app, the launcher, the Python API, scripts) hand a composed
config to the parts below: the typed settings (`validate`), a resumed run's recorded settings
taken back (`resumed`), and a job made of them (`job`, `attempt`). Hydra's and OmegaConf's
objects stop here; below, every part reads a `RunConfig`."""

import functools
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from PIL import Image

from nst_tf.clips import is_clip
from nst_tf.config import RunConfig, check
from nst_tf.errors import StopRequest, UserError, warn
from nst_tf.jobs import Composed, Job, Where
from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS
from nst_tf.resume import load_checkpoint
from nst_tf.rundir import SETTINGS

# Keys a later version added, with the value that runs recorded before it behaved as: a run dir
# written without one is continued with that value, and told so.
# (runs from before converge.* took every iteration)
ADDED_LATER: dict[str, Any] = {"video.allow_short": False, "converge.tolerance": 0.0,
                               "converge.change": 0.0, "converge.window": 50}
# What may change when resuming; everything else is the earlier run's, so the curve continues
# (the stop rule only says where it ends).
CHANGEABLE = ("iterations", "converge.tolerance", "converge.change", "converge.window",
              "save_every", "progress", "tensorboard", "precision", "jit_compile",
              "model.winograd",
              "paths.images", "paths.cache", "objective")


def validate(cfg: DictConfig) -> RunConfig:
    """The composed config as typed settings, checked as far as types cannot."""
    _reject_unknown_keys(cfg, "")
    run: RunConfig = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    check(run)
    return run


def job(cfg: DictConfig, where: Where, overrides: Sequence[str],
        images: Mapping[str, Image.Image] | None = None) -> Job:
    """A job of `cfg`: its settings are made (and a mistake in them recorded) when it runs.
    `images`: pictures given in memory, by role (content, style)."""
    return Job(functools.partial(composed, cfg, list(overrides), dict(images or {})), where,
               list(overrides))


def attempt(cfg: DictConfig, where: Where, overrides: Sequence[str],
            stop: StopRequest | None = None) -> dict[str, Any]:
    """One run of `cfg` into `where.out`, and how it ended (nst_tf.pipeline.attempt_jobs)."""
    from nst_tf import pipeline

    return pipeline.attempt_jobs([job(cfg, where, overrides)], stop=stop)[0]


def composed(cfg: DictConfig, overrides: Sequence[str],
             images: Mapping[str, Image.Image] | None = None) -> Composed:
    """What a job runs with: `cfg`'s settings, or with resume=DIR the earlier run's own (a
    video's are continued by a new run that takes its frames over)."""
    earlier, checkpoint = None, None
    if cfg.get("resume"):
        run_dir = Path(cfg.resume).expanduser()
        if (run_dir / "frames").is_dir():  # a video: this run starts from its frames
            earlier = run_dir
        else:
            checkpoint = load_checkpoint(cfg.resume)
        cfg = resumed(cfg, checkpoint.run_dir if checkpoint else run_dir, overrides)
        if earlier:
            cfg.resume = None
    if earlier or is_video(cfg):
        cfg.video.enabled = True
    try:
        settings = validate(cfg)
    except UserError as error:
        if not cfg.get("resume") and earlier is None:
            raise
        # a resumed run's value is its settings.yaml's, perhaps edited by hand: said as such
        raise UserError(f"resume: {(earlier or checkpoint.run_dir) / SETTINGS}: {error}") from None
    return Composed(settings, checkpoint, earlier, dict(images or {}))


def is_video(cfg: DictConfig) -> bool:
    """A clip file as content.path, or frames with video.enabled."""
    path = OmegaConf.select(cfg, "content.path")
    return bool(cfg.video.enabled or (path and is_clip(path)))


def resumed(cfg: DictConfig, run_dir: Path, overrides: Sequence[str]) -> DictConfig:
    """The earlier run's recorded settings, with only the CHANGEABLE keys from this command."""
    given = {o.split("=", 1)[0].lstrip("+~") for o in overrides} - {"resume"}
    fixed = sorted(key for key in given if key not in CHANGEABLE)
    if fixed:
        raise UserError(
            f"resume continues {run_dir} with its own settings, so {', '.join(fixed)} "
            f"cannot change; only {', '.join(CHANGEABLE)} can"
        )
    earlier = read_settings(run_dir)
    _check_complete(earlier, cfg, run_dir / SETTINGS)
    name = OmegaConf.select(earlier, "optimizer.name")
    if name not in OPTIMIZER_SCHEMAS:
        raise UserError(f"resume: {run_dir / SETTINGS} names optimizer.name={name}, which is "
                        f"unknown; use one of {', '.join(sorted(OPTIMIZER_SCHEMAS))} there")
    for key in given:
        OmegaConf.update(earlier, key, OmegaConf.select(cfg, key), merge=False)
    earlier.resume = cfg.resume
    return on_schema(cfg, earlier)


def on_schema(cfg: DictConfig, recorded: DictConfig) -> DictConfig:
    """A run's recorded settings back on the typed schema of a composed `cfg`, so they validate
    like any composed config; the optimiser node takes its own optimiser's schema."""
    recorded = recorded.copy()
    optimizer = recorded.pop("optimizer")
    merged = OmegaConf.merge(cfg, recorded)
    schema = OPTIMIZER_SCHEMAS[optimizer.name]
    merged.optimizer = OmegaConf.merge(OmegaConf.structured(schema), optimizer)
    return merged


def _check_complete(recorded: DictConfig, cfg: DictConfig, path: Path) -> None:
    """Refuse a recorded key missing (a line deleted by hand), which would otherwise take
    today's default silently and join two objectives in one loss curve; fill in a key added by
    a later version, with the value the earlier runs had, and say so."""
    for key in _keys(cfg):
        if OmegaConf.select(recorded, key, default=_ABSENT) is not _ABSENT:
            continue
        if key in ADDED_LATER:
            OmegaConf.update(recorded, key, ADDED_LATER[key], force_add=True)
            warn(f"resume: {path} has no {key} (written before it existed); continuing with "
                 f"{key}={ADDED_LATER[key]}, as that run had")
            continue
        raise UserError(f"resume: {path} has no {key}; put back the line that run had (or "
                        "start a new run): without it the run would go on with other settings")


_ABSENT = object()


def _keys(node: DictConfig, prefix: str = "") -> list[str]:
    """The dotted keys of a typed config, down through its settings groups (not into free
    dicts like `terms`, nor into the optimiser's, which the recorded name chooses)."""
    keys = []
    for key in node:
        child = node._get_node(key)
        dotted = f"{prefix}{key}"
        if key == "optimizer" and not prefix:
            keys.append(f"{dotted}.name")
        elif isinstance(child, DictConfig) and is_dataclass(OmegaConf.get_type(child)) \
                and not child._is_none() and key not in ("content", "style"):
            keys += _keys(child, f"{dotted}.")
        else:
            keys.append(dotted)
    return keys


def read_settings(folder: Path) -> DictConfig:
    """An earlier run's settings.yaml."""
    path = folder / SETTINGS
    if not path.is_file():
        raise UserError(f"resume: {folder} has no {SETTINGS}; give the run dir of an nst-tf run")
    try:
        settings = OmegaConf.load(path)
    except Exception as error:  # YAML's and OmegaConf's errors have no common base
        raise UserError(f"resume: {path} is damaged ({type(error).__name__}); "
                        "give the run dir of an intact nst-tf run") from error
    if not isinstance(settings, DictConfig):
        raise UserError(f"resume: {path} is damaged (not a mapping); "
                        "give the run dir of an intact nst-tf run")
    return settings


def _reject_unknown_keys(node: DictConfig, prefix: str) -> None:
    # `+key=value` adds keys past the schema; catch them before they are silently ignored.
    schema = OmegaConf.get_type(node)
    if is_dataclass(schema):
        known = {f.name for f in fields(schema)}
        for key in node:
            if key not in known:
                known_list = ", ".join(sorted(known))
                raise UserError(f"unknown config key '{prefix}{key}'; known keys: {known_list}")
    for key in node:
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            _reject_unknown_keys(child, f"{prefix}{key}.")
