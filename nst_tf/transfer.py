"""The compiled optimisation: targets, the objective, one optimiser step, and the loop.

A StyleTransfer optimises a batch of B images of one shape at once, each against its own
targets and weights (a member is one run); B = 1 is a plain run. The total minimised is the sum
of the members' totals, so each member's gradient is its own and no member depends on another.
"""

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import tensorflow as tf

from nst_tf import losses
from nst_tf.errors import Stopped, UserError
from nst_tf.model import FeatureExtractor
from nst_tf.optim import make_optimizer
from nst_tf.tiling import TiledExtractor, TiledObjective


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


@dataclass(frozen=True)
class Member:
    """One run of a batch: its images at the step's size, its first image and its weights.

    `style` is one image, or (image, weight) pairs whose Gram matrices are blended; with
    masks, the pairs' styles go one to each of `masks` ((H, W) in 0..1, content-sized).
    """

    content: np.ndarray
    style: np.ndarray | Sequence[tuple[np.ndarray, float]]
    init: np.ndarray
    weights: Weights
    masks: Sequence[np.ndarray] = ()
    previous: Sequence[tuple[np.ndarray, np.ndarray]] = ()


class StyleTransfer:
    """One compiled step for `batch` images of one shape, reusable across runs.

    Targets, weights and the images live in variables, so new runs (other weights, seeds, inits
    or images of the same size) only assign them: nothing is rebuilt or retraced.
    """

    def __init__(
        self,
        extractor: FeatureExtractor,
        terms: Sequence[losses.LossTerm],
        shape: tuple[int, int],
        optimizer: str,
        optimizer_params: Mapping[str, object],
        jit_compile: bool = False,
        batch: int = 1,
        tile: int | None = None,
    ) -> None:
        self.extractor = extractor
        self.terms = tuple(terms)
        self.shape = shape
        self.batch = batch
        # With `tile`, the objective is computed tile by tile (nst_tf.tiling), exactly.
        self.tiled = TiledObjective(extractor, terms, shape, tile) if tile else None
        # What the objective returns per member, in this order: the weighted total, each term.
        self.value_names = ("total", *(term.name for term in self.terms))
        height, width = shape
        self.image = tf.Variable(tf.zeros([batch, height, width, 3]), name="image")
        for term in self.terms:
            term.build(TiledExtractor(extractor, tile) if tile else extractor, shape, batch)
        self.term_weights = tf.Variable(tf.zeros([batch, len(self.terms)]), name="term_weights")
        # Members still optimised; an ended one (diverged) keeps its image from then on.
        self.active = tf.Variable(tf.ones([batch], tf.bool), name="active")
        self.optimizer = make_optimizer(
            optimizer, self._values_and_grad, self.image, len(self.value_names),
            **optimizer_params
        )
        self.updates = tf.Variable(0, dtype=tf.int64, name="updates")
        # Each member's newest image whose losses were all finite: what a diverged run keeps.
        self.last_finite = tf.Variable(tf.zeros([batch, height, width, 3]), name="last_finite")
        # No autograph: the step's control flow is tf.cond and tf.while_loop already, and
        # converting every function it calls took most of the trace.
        self._step = tf.function(self._step_and_count, jit_compile=jit_compile, autograph=False)
        self._evaluate = tf.function(self._values, jit_compile=jit_compile, autograph=False)
        started = time.perf_counter()
        self._step.get_concrete_function()  # traces
        traced = time.perf_counter()
        self._step()  # optimises the graph and runs it once, outside any timed loop
        self.compile_seconds = time.perf_counter() - started
        # At least one step's time (the graph is optimised then): a bound the batch probe reads
        # before it times any step.
        self.first_step_seconds = time.perf_counter() - traced

    def _values(self, image: tf.Tensor) -> tf.Tensor:
        """(B, 1 + terms): each member's weighted total, then each term unweighted."""
        if self.tiled:
            return self._with_total(self.tiled.values(image))
        features = self.extractor(image)
        return self._with_total(
            tf.stack([term.value(features, image) for term in self.terms], axis=1))

    def _with_total(self, values: tf.Tensor) -> tf.Tensor:
        total = tf.reduce_sum(self.term_weights * values, axis=1, keepdims=True)
        return tf.concat([total, values], axis=1)

    def _values_and_grad(self, image: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        if self.tiled:
            return self.tiled.values_and_grad(image, self._with_total)
        with tf.GradientTape() as tape:
            tape.watch(image)
            values = self._values(image)
            total = tf.reduce_sum(values[:, 0])  # members are independent: each its own gradient
        return values, tape.gradient(total, image)

    def _step_and_count(self) -> tf.Tensor:
        before = self.image.read_value()
        values = self.optimizer.step()  # measured at `before`
        active = self.active[:, None, None, None]
        self.image.assign(tf.where(active, self.image, before))
        self.updates.assign_add(1)
        finite = tf.reduce_all(tf.math.is_finite(values), axis=1)[:, None, None, None]
        self.last_finite.assign(tf.where(finite & active, before, self.last_finite))
        return values

    def start(self, content: np.ndarray, style: np.ndarray | Sequence[tuple[np.ndarray, float]],
              init: np.ndarray, weights: Weights, masks: Sequence[np.ndarray] = ()) -> None:
        """Begin a new run of a one-image step (see Member for the arguments)."""
        self.start_batch([Member(content, style, init, weights, masks)])

    def start_batch(self, members: Sequence[Member]) -> None:
        """Begin a new run for every member: compute the targets once, set the weights and the
        first images."""
        if len(members) != self.batch:
            raise ValueError(f"this step runs {self.batch} images, got {len(members)} members")
        for index, member in enumerate(members):
            if member.content.shape[:2] != self.shape or member.init.shape[:2] != self.shape:
                raise ValueError(f"images must be {self.shape}, got {member.content.shape}, "
                                 f"{member.init.shape}")
            style = member.style
            blend = [(style, 1.0)] if isinstance(style, np.ndarray) else list(style)
            targets = losses.Targets(member.content, blend, member.masks, member.previous)
            for term in self.terms:
                term.start(index, targets, member.weights.layers.get(term.name, {}))
            self.term_weights[index].assign(
                [member.weights.terms[term.name] for term in self.terms])
        init = np.stack([member.init for member in members])
        self.image.assign(init)
        self.last_finite.assign(init)
        self.active.assign(tf.ones([self.batch], tf.bool))
        self.updates.assign(0)
        self.optimizer.reset()

    def step_values(self) -> np.ndarray:
        """One optimiser iteration; returns (B, values) at the images before it."""
        return self._step().numpy()

    def step(self) -> dict[str, float]:
        """One iteration of a one-image step; returns the loss values before it."""
        return self._named(self.step_values()[0])

    def evaluate_values(self) -> np.ndarray:
        """(B, values) at the current images."""
        return self._evaluate(self.image).numpy()

    def evaluate(self) -> dict[str, float]:
        """The loss values at the current image of a one-image step."""
        return self._named(self.evaluate_values()[0])

    def result(self, member: int = 0) -> np.ndarray:
        """A member's current image, float32 (H, W, 3) in pixel units (not yet clipped)."""
        return self.image[member].numpy()

    def end(self, member: int, keep: bool = False) -> None:
        """Stop optimising `member` and put back its newest image with finite losses (`keep`:
        keep its current image, as a converged member does)."""
        self.active[member].assign(False)
        if not keep:
            self.image[member].assign(self.last_finite[member])

    def _named(self, values: np.ndarray) -> dict[str, float]:
        return dict(zip(self.value_names, values.tolist(), strict=True))


class View:
    """One member of a StyleTransfer, as a callback sees it: its image and shape."""

    def __init__(self, transfer: StyleTransfer, member: int) -> None:
        self.transfer, self.member, self.shape = transfer, member, transfer.shape

    def result(self) -> np.ndarray:
        return self.transfer.result(self.member)


@dataclass(frozen=True)
class Progress:
    """Where a run is: `values` are the losses at the image after `iteration` updates."""

    iteration: int
    seconds: float
    values: Mapping[str, float]

    def row(self) -> dict[str, float]:
        return {"iteration": self.iteration, "seconds": self.seconds, **self.values}


class Callback(Protocol):
    def on_step(self, progress: Progress, run: View) -> None: ...

    def on_end(self, progress: Progress, run: View, status: str) -> None:
        """`status`: "ok", "interrupted" (`progress` is the current image) or "diverged"
        (`progress` is the newest finite image, now back in the run, and already logged)."""


@dataclass(frozen=True)
class Outcome:
    """How one member's loop ended: "ok", "interrupted", "diverged" or "failed" (a callback
    could not write). `progress` is where it ended (diverged: the newest finite image's, None if
    none came after the start), and `iteration` the update count at the end (diverged: where
    the loss became non-finite)."""

    status: str
    iteration: int
    progress: Progress | None
    error: Exception | None = None  # "failed": a callback could not write
    converged: bool = False  # "ok" before its iterations ran out: its stop rule said so


# A member's stop rule: given its values at a step (total first) and its view (the image after
# the step), whether it has converged.
Rule = Callable[[np.ndarray, View], bool]


class Diverged(Exception):
    """A loss became non-finite; `progress` is the newest finite image's (None: there was none
    after the start)."""

    def __init__(self, iteration: int, progress: Progress | None) -> None:
        self.iteration, self.progress = iteration, progress
        super().__init__(f"the loss became non-finite at iteration {iteration}")


def optimise_batch(
    transfer: StyleTransfer,
    iterations: int,
    callbacks: Sequence[Sequence[Callback]],
    first: int | Sequence[int] = 0,
    seconds: float = 0.0,
    done: Sequence[Rule | None] = (),
    stop: Callable[[], int | None] | None = None,
) -> tuple[list[Outcome], int | None]:
    """Run `iterations` steps of every member; return how each ended and the stop signal that
    ended the loop early, if any.

    `callbacks[b]` are member b's. A member whose loss becomes non-finite gets its newest finite
    image back, its callbacks save it, and it ends "diverged" while the others go on. A stop
    signal lets every running member's callbacks save what there is ("interrupted"). A resumed
    run counts on from iteration `first` (or `first[b]` each) and `seconds` of earlier wall time.
    `done[b]`, member b's
    stop rule (none: it runs every iteration), asked after each of its steps, ends that member
    alone as converged ("ok", at its image then) while the others go on. `stop`, asked between
    steps, returns the stop signal once one was requested (the loop installs no handlers:
    whoever runs it decides what stops it; an exception raised inside TensorFlow's Python layers
    could leave it unable to evaluate the image to save).
    """
    started = time.perf_counter() - seconds
    firsts = [first] * transfer.batch if isinstance(first, int) else list(first)
    views = [View(transfer, member) for member in range(transfer.batch)]
    outcomes: list[Outcome | None] = [None] * transfer.batch
    last: list[Progress | None] = [None] * transfer.batch  # each member's newest finite row

    def call(member: int, iteration: int, progress: Progress, status: str | None) -> bool:
        """Member `member`'s callbacks, for a step (`status` None) or the end; one that cannot
        write ends that member alone."""
        try:
            for callback in callbacks[member]:
                if status is None:
                    callback.on_step(progress, views[member])
                else:
                    callback.on_end(progress, views[member], status)
        except (OSError, UserError) as error:
            transfer.end(member)
            outcomes[member] = Outcome("failed", iteration, last[member], error)
            return False
        return True

    def diverge(member: int, iteration: int) -> None:
        transfer.end(member)
        if last[member] is not None and not call(member, iteration, last[member], "diverged"):
            return
        outcomes[member] = Outcome("diverged", iteration, last[member])

    def visit(rows: np.ndarray, updates: int, status: str | None,
              members: Sequence[int] = range(transfer.batch), converged: bool = False) -> None:
        """Each running member's values after `updates` of this loop: a step's (`status` None)
        or the end's (of `members`, which `converged`, or not)."""
        now = time.perf_counter() - started
        for member in members:
            values, iteration = rows[member], firsts[member] + updates
            if outcomes[member] is not None:
                continue
            if not np.isfinite(values).all():
                diverge(member, iteration)
                continue
            progress = Progress(iteration, now, transfer._named(values))
            if status is None:
                last[member] = progress
                call(member, iteration, progress, None)
            elif call(member, iteration, progress, status):
                outcomes[member] = Outcome(status, iteration, progress, converged=converged)

    signum = None
    rules = list(done) or [None] * transfer.batch
    for updates in range(iterations):
        rows = transfer.step_values()
        visit(rows, updates, None)
        converged = [member for member, rule in enumerate(rules) if outcomes[member] is None
                     and rule is not None and rule(rows[member], views[member])]
        if converged:  # each ends alone at its image now, one update on from its row
            visit(transfer.evaluate_values(), updates + 1, "ok", converged, converged=True)
            for member in converged:
                transfer.end(member, keep=True)
        signum = stop() if stop is not None else None
        if signum is not None or all(outcomes):
            break
    if not all(outcomes):  # a step cut short by a signal still completes: count updates
        visit(transfer.evaluate_values(), int(transfer.updates.numpy()),
              "interrupted" if signum is not None else "ok")
    return [outcome for outcome in outcomes if outcome], signum


def optimise(
    transfer: StyleTransfer,
    iterations: int,
    callbacks: Sequence[Callback] = (),
    first: int = 0,
    seconds: float = 0.0,
    stop: Callable[[], int | None] | None = None,
) -> Progress:
    """optimise_batch for a one-image step: returns where the run ended, or raises Stopped
    (after the callbacks saved) or Diverged (after they saved the newest finite image)."""
    [outcome], signum = optimise_batch(transfer, iterations, [callbacks], first, seconds,
                                       stop=stop)
    if outcome.status == "diverged":
        raise Diverged(outcome.iteration, outcome.progress)
    if signum is not None:
        raise Stopped(signum, outcome.progress)
    assert outcome.progress is not None
    return outcome.progress
