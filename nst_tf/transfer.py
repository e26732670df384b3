"""The compiled optimisation: targets, the objective, one optimiser step, and the loop."""

import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from nst_tf import losses
from nst_tf.images import save_png
from nst_tf.model import FeatureExtractor
from nst_tf.optim import make_optimizer

# What the objective returns, in this order: the weighted total, then the unweighted terms.
VALUE_NAMES = ("total", "content", "style", "tv")


@dataclass(frozen=True)
class Weights:
    """The loss weights: α, β, the TV weight, and per-layer weights (paper names)."""

    alpha: float
    beta: float
    tv: float
    content_layers: Mapping[str, float]
    style_layers: Mapping[str, float]


class StyleTransfer:
    """One compiled step for images of one shape, reusable across runs.

    Targets, weights and the image live in variables, so a new run (other weights, seed, init or
    images of the same size) only assigns them: nothing is rebuilt or retraced.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        content_layers: Sequence[str],
        style_layers: Sequence[str],
        shape: tuple[int, int],
        optimizer: str,
        optimizer_params: Mapping[str, object],
        jit_compile: bool = False,
        regions: int = 0,
    ) -> None:
        """`regions` > 0: spatial control, one style per masked region (guided Grams)."""
        self.extractor = extractor
        self.regions = regions
        self.shape = shape
        self.content_layers = tuple(content_layers)
        self.style_layers = tuple(style_layers)
        height, width = shape
        self.image = tf.Variable(tf.zeros([1, height, width, 3]), name="image")
        self.content_targets = {
            name: tf.Variable(tf.zeros(feature_shape(name, height, width)), name=f"P_{name}")
            for name in self.content_layers
        }
        grams = [regions] if regions else []
        self.style_targets = {
            name: tf.Variable(tf.zeros([*grams, *[feature_channels(name)] * 2]), name=f"A_{name}")
            for name in self.style_layers
        }
        self.masks = {
            name: tf.Variable(tf.zeros([regions, *feature_shape(name, height, width)[1:3]]))
            for name in (self.style_layers if regions else ())
        }
        self.region_weights = tf.Variable(tf.zeros([regions]))
        self.content_weights = tf.Variable(tf.zeros([len(self.content_layers)]))
        self.style_weights = tf.Variable(tf.zeros([len(self.style_layers)]))
        self.loss_weights = tf.Variable(tf.zeros([3]))  # α, β, TV
        self.optimizer = make_optimizer(
            optimizer, self._values_and_grad, self.image, len(VALUE_NAMES), **optimizer_params
        )
        self.updates = tf.Variable(0, dtype=tf.int64, name="updates")
        # The newest image whose losses were all finite: what a diverged run keeps.
        self.last_finite = tf.Variable(tf.zeros([1, height, width, 3]), name="last_finite")
        self._step = tf.function(self._step_and_count, jit_compile=jit_compile)
        self._evaluate = tf.function(self._values, jit_compile=jit_compile)
        # Style images come in any size: one trace for all of them.
        self._grams = tf.function(
            self._style_grams, input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)]
        )
        self._features = tf.function(self.extractor.__call__)
        started = time.perf_counter()
        self._step()  # traces and optimises the graph once, outside any timed loop
        self.compile_seconds = time.perf_counter() - started

    def _values(self, image: tf.Tensor) -> tf.Tensor:
        f = self.extractor(image)
        content = _weighted_sum(
            self.content_weights,
            [losses.content_loss(f[n], self.content_targets[n]) for n in self.content_layers],
        )
        style = _weighted_sum(
            self.style_weights, [self._style_term(f[n], n) for n in self.style_layers]
        )
        tv = losses.total_variation(image)
        alpha, beta, tv_weight = tf.unstack(self.loss_weights)
        total = alpha * content + beta * style + tv_weight * tv
        return tf.stack([total, content, style, tv])

    def _style_term(self, features: tf.Tensor, name: str) -> tf.Tensor:
        if not self.regions:
            return losses.style_layer_loss(features, self.style_targets[name])
        return losses.guided_style_layer_loss(
            features, self.masks[name], self.style_targets[name], self.region_weights
        )

    def _values_and_grad(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(image)
            values = self._values(image)
            total = values[0]  # sliced on the tape, or the gradient would be None
        return values, tape.gradient(total, image)

    def _step_and_count(self) -> tf.Tensor:
        before = self.image.read_value()
        values = self.optimizer.step()  # measured at `before`
        self.updates.assign_add(1)
        self.last_finite.assign(
            tf.where(tf.reduce_all(tf.math.is_finite(values)), before, self.last_finite)
        )
        return values

    def _style_grams(self, style: tf.Tensor) -> dict[str, tf.Tensor]:
        features = self.extractor(style)
        return {name: losses.gram_matrix(features[name]) for name in self.style_layers}

    def start(
        self,
        content: np.ndarray,
        style: np.ndarray | Sequence[tuple[np.ndarray, float]],
        init: np.ndarray,
        weights: Weights,
        masks: Sequence[np.ndarray] = (),
    ) -> None:
        """Begin a new run: compute the targets once, set the weights and the first image.

        `style` is one image, or (image, weight) pairs whose Gram matrices are blended; with
        regions, the pairs' styles go one to each of `masks` ((H, W) in 0..1, content-sized).
        """
        if content.shape[:2] != self.shape or init.shape[:2] != self.shape:
            raise ValueError(f"images must be {self.shape}, got {content.shape}, {init.shape}")
        content_features = self._features(tf.constant(content[None]))
        for name in self.content_layers:
            self.content_targets[name].assign(content_features[name])
        blend = [(style, 1.0)] if isinstance(style, np.ndarray) else list(style)
        total = sum(weight for _, weight in blend)
        if len(masks) != self.regions or (self.regions and len(blend) != self.regions):
            raise ValueError(f"{self.regions} regions need as many masks and styles")
        grams = [(self._grams(tf.constant(image[None])), weight) for image, weight in blend]
        for name in self.style_layers:
            if self.regions:
                self.style_targets[name].assign(tf.stack([g[name] for g, _ in grams]))
                self.masks[name].assign(np.stack([layer_mask(m, name) for m in masks]))
            else:
                self.style_targets[name].assign(
                    tf.add_n([g[name] * (weight / total) for g, weight in grams])
                )
        self.region_weights.assign([weight / total for _, weight in grams][: self.regions])
        self.content_weights.assign([weights.content_layers[n] for n in self.content_layers])
        self.style_weights.assign([weights.style_layers[n] for n in self.style_layers])
        self.loss_weights.assign([weights.alpha, weights.beta, weights.tv])
        self.image.assign(init[None])
        self.last_finite.assign(init[None])
        self.updates.assign(0)
        self.optimizer.reset()

    def step(self) -> dict[str, float]:
        """One optimiser iteration; returns the loss values at the image before it."""
        return dict(zip(VALUE_NAMES, self._step().numpy().tolist(), strict=True))

    def evaluate(self) -> dict[str, float]:
        """The loss values at the current image."""
        values = self._evaluate(self.image).numpy().tolist()
        return dict(zip(VALUE_NAMES, values, strict=True))

    def result(self) -> np.ndarray:
        """The current image, float32 (H, W, 3) in pixel units (not yet clipped)."""
        return self.image.numpy()[0]

    def restore_last_finite(self) -> None:
        """Put back the newest image whose losses were all finite (after a divergence)."""
        self.image.assign(self.last_finite)


def _weighted_sum(weights: tf.Variable, terms: list[tf.Tensor]) -> tf.Tensor:
    return tf.reduce_sum(weights * tf.stack(terms)) if terms else tf.constant(0.0)


_CHANNELS = {1: 64, 2: 128, 3: 256, 4: 512, 5: 512}


def feature_channels(name: str) -> int:
    """N_l, the number of filters of paper layer `convB_I`."""
    return _CHANNELS[int(name[4])]


def feature_shape(name: str, height: int, width: int) -> list[int]:
    """Shape of a layer's response: each pooling before block B halves (floors) the size."""
    for _ in range(int(name[4]) - 1):
        height, width = height // 2, width // 2
    return [1, height, width, feature_channels(name)]


def layer_mask(mask: np.ndarray, name: str) -> np.ndarray:
    """A content-sized mask at a layer's resolution: 2×2 averages, as each pooling does."""
    for _ in range(int(name[4]) - 1):
        h, w = mask.shape[0] // 2, mask.shape[1] // 2
        mask = mask[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean(axis=(1, 3))
    return mask.astype(np.float32)


@dataclass(frozen=True)
class Progress:
    """Where a run is: `values` are the losses at the image after `iteration` updates."""

    iteration: int
    seconds: float
    values: Mapping[str, float]

    def row(self) -> dict[str, float]:
        return {"iteration": self.iteration, "seconds": self.seconds, **self.values}


class Callback(Protocol):
    def on_step(self, progress: Progress, transfer: StyleTransfer) -> None: ...

    def on_end(self, progress: Progress, transfer: StyleTransfer, status: str) -> None:
        """`status`: "ok", "interrupted" (`progress` is the current image) or "diverged"
        (`progress` is the newest finite image, now back in `transfer`, and already logged)."""


class Stopped(Exception):
    """A stop signal (Ctrl-C, SIGTERM, SIGUSR1) ended the loop after the callbacks saved."""

    def __init__(self, signum: int, progress: Progress | None = None) -> None:
        self.signum, self.progress = signum, progress
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # the shell's convention for a process ended by a signal


class Diverged(Exception):
    """A loss became non-finite; `progress` is the newest finite image's (None: there was none
    after the start)."""

    def __init__(self, iteration: int, progress: Progress | None) -> None:
        self.iteration, self.progress = iteration, progress
        super().__init__(f"the loss became non-finite at iteration {iteration}")


# Slurm can be told to send SIGUSR1 before a time limit; schedulers stop jobs with SIGTERM.
STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGUSR1") if hasattr(signal, name)
)


def optimise(
    transfer: StyleTransfer,
    iterations: int,
    callbacks: Sequence[Callback] = (),
    first: int = 0,
    seconds: float = 0.0,
) -> Progress:
    """Run `iterations` steps and return where the run ended.

    A stop signal lets every callback save what there is, then raises Stopped; a non-finite
    loss puts back the newest finite image, lets the callbacks save it, then raises Diverged.
    A resumed run counts on from iteration `first` and `seconds` of earlier wall time.
    """
    started = time.perf_counter() - seconds
    # Signals only set a flag, checked between steps: an exception raised inside TensorFlow's
    # Python layers can leave it unable to evaluate the image we want to save.
    received: list[int] = []
    main = threading.current_thread() is threading.main_thread()
    previous = {
        signum: signal.signal(signum, lambda signum, _: received.append(signum))
        for signum in (STOP_SIGNALS if main else ())
    }
    last: Progress | None = None  # the newest logged progress with finite losses
    try:
        for iteration in range(first, first + iterations):
            values = transfer.step()
            if not _finite(values):
                _diverge(transfer, callbacks, iteration, last)
            last = Progress(iteration, time.perf_counter() - started, values)
            for callback in callbacks:
                callback.on_step(last, transfer)
            if received:
                break
        # A step cut short by a signal still completes, so count updates rather than rows.
        done = first + int(transfer.updates.numpy())
        values = transfer.evaluate()
        if not _finite(values):
            _diverge(transfer, callbacks, done, last)
        progress = Progress(done, time.perf_counter() - started, values)
        status = "interrupted" if received else "ok"
        for callback in callbacks:
            callback.on_end(progress, transfer, status)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if received:
        raise Stopped(received[0], progress)
    return progress


def _finite(values: Mapping[str, float]) -> bool:
    return all(math.isfinite(v) for v in values.values())


def _diverge(transfer: StyleTransfer, callbacks: Sequence[Callback], iteration: int,
             last: Progress | None) -> None:
    transfer.restore_last_finite()
    if last is not None:
        for callback in callbacks:
            callback.on_end(last, transfer, "diverged")
    raise Diverged(iteration, last)


class ProgressBar:
    """A tqdm bar with the iteration, the losses and it/s."""

    def __init__(self, iterations: int, description: str = "") -> None:
        self.bar = tqdm(total=iterations, desc=description, unit="it", dynamic_ncols=True)

    def on_step(self, progress: Progress, transfer: StyleTransfer) -> None:
        values = progress.values
        self.bar.set_postfix(
            total=f"{values['total']:.4g}",
            content=f"{values['content']:.4g}",
            style=f"{values['style']:.4g}",
            refresh=False,
        )
        self.bar.update(1)

    def on_end(self, progress: Progress, transfer: StyleTransfer, status: str) -> None:
        self.bar.close()


class Snapshots:
    """Writes `snapshots/iter_NNNNN.png` every `every` updates (and where a run stops early),
    through `show`, which turns the optimised image into what the user sees."""

    def __init__(
        self,
        folder: Path,
        every: int,
        show: Callable[[np.ndarray], np.ndarray] = lambda image: image,
    ) -> None:
        self.folder, self.every, self.show = folder, every, show

    def path(self, iteration: int) -> Path:
        return self.folder / f"iter_{iteration:05d}.png"

    def on_step(self, progress: Progress, transfer: StyleTransfer) -> None:
        done = progress.iteration + 1  # the image now holds this many updates
        if self.every and done % self.every == 0:
            save_png(self.path(done), self.show(transfer.result()))

    def on_end(self, progress: Progress, transfer: StyleTransfer, status: str) -> None:
        if status != "ok" and progress.iteration > 0:  # what resume needs; never the start
            save_png(self.path(progress.iteration), self.show(transfer.result()))
