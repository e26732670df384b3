"""The compiled optimisation: targets, the objective, one optimiser step, and the loop."""

import csv
import math
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from nst_tf import losses
from nst_tf.errors import WriteError
from nst_tf.images import save_png
from nst_tf.model import FeatureExtractor
from nst_tf.optim import make_optimizer
from nst_tf.report import columns


@dataclass(frozen=True)
class Weights:
    """How much each term counts, by term name (the paper's α and β are `content` and `style`),
    and, per term, how much each of its layers."""

    terms: Mapping[str, float]
    layers: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    @classmethod
    def paper(cls, alpha: float, beta: float, tv: float, content_layers: Mapping[str, float],
              style_layers: Mapping[str, float]) -> "Weights":
        return cls({"content": alpha, "style": beta, "tv": tv},
                   {"content": content_layers, "style": style_layers})


class StyleTransfer:
    """One compiled step for images of one shape, reusable across runs.

    Targets, weights and the image live in variables, so a new run (other weights, seed, init or
    images of the same size) only assigns them: nothing is rebuilt or retraced.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        terms: Sequence[losses.LossTerm],
        shape: tuple[int, int],
        optimizer: str,
        optimizer_params: Mapping[str, object],
        jit_compile: bool = False,
    ) -> None:
        self.extractor = extractor
        self.terms = tuple(terms)
        self.shape = shape
        # What the objective returns, in this order: the weighted total, then each term.
        self.value_names = ("total", *(term.name for term in self.terms))
        height, width = shape
        self.image = tf.Variable(tf.zeros([1, height, width, 3]), name="image")
        for term in self.terms:
            term.build(extractor, shape)
        self.term_weights = tf.Variable(tf.zeros([len(self.terms)]), name="term_weights")
        self.optimizer = make_optimizer(
            optimizer, self._values_and_grad, self.image, len(self.value_names),
            **optimizer_params
        )
        self.updates = tf.Variable(0, dtype=tf.int64, name="updates")
        # The newest image whose losses were all finite: what a diverged run keeps.
        self.last_finite = tf.Variable(tf.zeros([1, height, width, 3]), name="last_finite")
        self._step = tf.function(self._step_and_count, jit_compile=jit_compile)
        self._evaluate = tf.function(self._values, jit_compile=jit_compile)
        started = time.perf_counter()
        self._step()  # traces and optimises the graph once, outside any timed loop
        self.compile_seconds = time.perf_counter() - started

    def _values(self, image: tf.Tensor) -> tf.Tensor:
        features = self.extractor(image)
        values = [term.value(features, image) for term in self.terms]
        weights = tf.unstack(self.term_weights)
        total = weights[0] * values[0]
        for weight, value in zip(weights[1:], values[1:], strict=True):
            total = total + weight * value
        return tf.stack([total, *values])

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
        masks, the pairs' styles go one to each of `masks` ((H, W) in 0..1, content-sized).
        """
        if content.shape[:2] != self.shape or init.shape[:2] != self.shape:
            raise ValueError(f"images must be {self.shape}, got {content.shape}, {init.shape}")
        blend = [(style, 1.0)] if isinstance(style, np.ndarray) else list(style)
        targets = losses.Targets(content, blend, masks)
        for term in self.terms:
            term.start(targets, weights.layers.get(term.name, {}))
        self.term_weights.assign([weights.terms[term.name] for term in self.terms])
        self.image.assign(init[None])
        self.last_finite.assign(init[None])
        self.updates.assign(0)
        self.optimizer.reset()

    def step(self) -> dict[str, float]:
        """One optimiser iteration; returns the loss values at the image before it."""
        return dict(zip(self.value_names, self._step().numpy().tolist(), strict=True))

    def evaluate(self) -> dict[str, float]:
        """The loss values at the current image."""
        values = self._evaluate(self.image).numpy().tolist()
        return dict(zip(self.value_names, values, strict=True))

    def result(self) -> np.ndarray:
        """The current image, float32 (H, W, 3) in pixel units (not yet clipped)."""
        return self.image.numpy()[0]

    def restore_last_finite(self) -> None:
        """Put back the newest image whose losses were all finite (after a divergence)."""
        self.image.assign(self.last_finite)


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
        self.bar.set_postfix({name: f"{value:.4g}" for name, value in progress.values.items()},
                             refresh=False)
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


class TensorBoardLog:
    """Each step's losses as TensorBoard scalars, and the image every `every` updates and at
    the end, under `folder` (`tensorboard --logdir` it)."""

    def __init__(self, folder: Path, every: int,
                 show: Callable[[np.ndarray], np.ndarray] = lambda image: image) -> None:
        self.writer = tf.summary.create_file_writer(str(folder))
        self.every, self.show = every, show

    def on_step(self, progress: Progress, transfer: StyleTransfer) -> None:
        with self.writer.as_default(step=progress.iteration):
            for name, value in progress.values.items():
                tf.summary.scalar(f"loss/{name}", value)
        done = progress.iteration + 1
        if self.every and done % self.every == 0:
            self._image(done, transfer)

    def on_end(self, progress: Progress, transfer: StyleTransfer, status: str) -> None:
        self._image(progress.iteration, transfer)
        self.writer.flush()

    def _image(self, iteration: int, transfer: StyleTransfer) -> None:
        pixels = np.clip(self.show(transfer.result()), 0, 255) / 255.0
        with self.writer.as_default(step=iteration):
            tf.summary.image("image", pixels[None].astype(np.float32))


class LossLog:
    """Appends one CSV row per step, so a stopped or crashed run keeps its losses.

    Row k holds the losses at the image after k updates: the weighted total, then each term
    unweighted; `size` is the long side the step ran at (coarse-to-fine runs change it).
    """

    def __init__(self, csv_path: Path, value_names: Sequence[str],
                 earlier: Sequence[Mapping[str, float]] = ()) -> None:
        """`earlier`: rows of the run this one resumes, so the curve continues."""
        self.csv_path, self.columns = csv_path, columns(value_names)
        self._write("w", earlier, header=True)

    def _write(self, mode: str, rows: Sequence[Mapping[str, object]], header: bool = False
               ) -> None:
        try:
            with open(self.csv_path, mode, newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.columns)
                if header:
                    writer.writeheader()
                writer.writerows(rows)
        except OSError as error:
            raise WriteError(self.csv_path, error.strerror or str(error)) from error

    def _append(self, progress: Progress, transfer: StyleTransfer) -> None:
        self._write("a", [{**progress.row(), "size": max(transfer.shape)}])

    def on_step(self, progress: Progress, transfer: StyleTransfer) -> None:
        self._append(progress, transfer)

    def on_end(self, progress: Progress, transfer: StyleTransfer, status: str) -> None:
        if status != "diverged":  # a diverged run's last finite row is already logged
            self._append(progress, transfer)
