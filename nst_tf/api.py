"""The Python API: `nst_tf.stylize(content, style, **settings)`, no Hydra runtime needed.

It runs the pipeline the CLI runs, with the same checks and the same one-line errors (raised as
UserError), and reuses the compiled step across calls as a sweep does.
"""

import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from PIL import Image

from nst_tf.config import CONF_DIR, ImageConfig, config_error_message, register_configs
from nst_tf.errors import UserError

Picture = str | Path | Image.Image | np.ndarray


@dataclass(frozen=True)
class Result:
    """A finished run: the image, each loss per iteration, and the run's summary."""

    image: Image.Image
    losses: Mapping[str, list[float]]  # iteration, seconds, total, each term, size
    summary: Mapping[str, Any]
    output_dir: Path | None  # where its files are, if kept


def stylize(content: Picture, style: Picture, *, output_dir: str | Path | None = None,
            **settings: Any) -> Result:
    """Stylise `content` with `style`.

    Each picture is a preset name (e.g. "starry"), a file path, a PIL image or an (H, W, 3)
    array of 0..255 values. `settings` are config keys (see the README's table), nested ones as
    dicts: `stylize("tubingen", "starry", size=256, optimizer={"name": "adam"})`. The run's
    files (result, losses, snapshots, summary) go to `output_dir`, a new folder, if given.
    Raises UserError with the CLI's one line for a bad value; KeyboardInterrupt if stopped.
    """
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
    from nst_tf import pipeline
    from nst_tf.report import read_losses

    with tempfile.TemporaryDirectory(prefix="nst-tf-") as scratch:
        cfg = _config(settings, {"content": content, "style": style}, Path(scratch))
        out = Path(output_dir) if output_dir is not None else Path(scratch) / "run"
        out.mkdir(parents=True, exist_ok=True)
        where = pipeline.Where(out, "output_dir", "nst_tf.stylize(...)")
        summary = pipeline.attempt(cfg, where, [])
        if summary["status"] == "interrupted":
            raise KeyboardInterrupt(summary["reason"])
        if summary["status"] != "ok":
            raise UserError(summary["reason"])
        image = Image.open(out / "result.png")
        image.load()
        result = Result(image, read_losses(out / "losses.csv"), summary,
                        out if output_dir is not None else None)
        if output_dir is None:
            shutil.rmtree(out)
    return result


def _config(settings: Mapping[str, Any], pictures: Mapping[str, Picture], scratch: Path
            ) -> DictConfig:
    """The composed config, as the CLI composes it, with `settings` merged on its schema."""
    register_configs()
    presets = [f"{role}={pic}" for role, pic in pictures.items() if _is_preset(role, pic)]
    settings = dict(settings)
    optimizer = settings.get("optimizer")  # a name or {"name": ...} picks the preset and schema
    if isinstance(optimizer, str) or (isinstance(optimizer, Mapping) and "name" in optimizer):
        name = optimizer if isinstance(optimizer, str) else optimizer["name"]
        presets.append(f"optimizer={name}")
        settings["optimizer"] = {} if isinstance(optimizer, str) else optimizer
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
            cfg = compose("config", overrides=presets)
        for role, picture in pictures.items():
            if not _is_preset(role, picture):
                path = _as_file(picture, scratch / f"{role}.png")
                cfg[role] = OmegaConf.structured(ImageConfig(path=str(path)))
        return OmegaConf.merge(cfg, settings)
    except (HydraException, OmegaConfBaseException) as error:
        raise UserError(config_error_message(error)) from None


def _is_preset(role: str, picture: Picture) -> bool:
    return isinstance(picture, str) and (CONF_DIR / role / f"{picture}.yaml").is_file()


def _as_file(picture: Picture, path: Path) -> Path:
    if isinstance(picture, str | Path):
        return Path(picture).expanduser()
    if isinstance(picture, np.ndarray):
        picture = Image.fromarray(np.clip(np.asarray(picture), 0, 255).astype(np.uint8))
    if not isinstance(picture, Image.Image):
        raise UserError(f"{path.stem}: give a preset name, a file path, a PIL image or an "
                        f"(H, W, 3) array, not {type(picture).__name__}")
    picture.convert("RGB").save(path)
    return path
