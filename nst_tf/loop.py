"""The one loop every run walks: a still, a batch, a multi-scale still, each frame of a clip
(its coarse scales, then the clip's size) and each image of a folder. Per leg of the course:
each run's pictures at that size and first image, the compiled step, its members, their
callbacks, the optimiser loop, and what each run keeps of the leg; how each run ended, and
the line that says so."""

import dataclasses
import logging
import signal
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Protocol

import keras
import numpy as np
import tensorflow as tf

from nst_tf.course import Course, Leg, Stage
from nst_tf.errors import StopRequest, pause_point
from nst_tf.pictures import Scaled
from nst_tf.transfer import Member, Outcome, StyleTransfer, optimise_batch

log = logging.getLogger("nst_tf")

# A leg's compiled step for (stage, content shape, batch), and whether it was reused.
Build = Callable[[Stage, tuple[int, int], int], tuple[StyleTransfer, bool]]


class Run(Protocol):
    """What the loop asks of one run (a still, a frame): its pictures at a leg's size, its first
    image, its member of the step, its callbacks, and what it keeps of a finished leg."""

    seed: int

    def at(self, size: int) -> Scaled: ...

    def first_image(self, scaled: Scaled) -> np.ndarray: ...

    def member(self, leg: Leg, scaled: Scaled, start: np.ndarray) -> Member: ...

    def callbacks(self, leg: Leg, scaled: Scaled, member: int, step: StyleTransfer,
                  reused: bool) -> list: ...

    def keep(self, leg: Leg, scaled: Scaled, image: np.ndarray, outcome: Outcome) -> None:
        """A leg ended "ok": keep what it made (a scale's picture, a frame)."""


@dataclass
class Walked:
    """How a walk ended: each run's last outcome, the images of the runs that finished every
    leg, each run's pictures at the last size it reached, and the stop signal, if any."""

    outcomes: dict[int, Outcome] = field(default_factory=dict)
    images: dict[int, np.ndarray] = field(default_factory=dict)
    scaled: dict[int, Scaled] = field(default_factory=dict)
    legs: dict[int, Leg] = field(default_factory=dict)
    signum: int | None = None


def walk(runs: Sequence[Run], course: Course, build: Build, stop: StopRequest,
         done: Callable[[Leg], Callable[[np.ndarray], bool] | None] = lambda leg: None,
         say_legs: bool = True) -> Walked:
    """Walk `course` for `runs` as one batch (one compiled step per leg). A run whose leg does
    not end "ok" ends there; the others go on. A stop signal lets every running run save, and
    the walk ends. `done(leg)` makes a leg's stop rule (see optimise_batch). Until the first leg's
    step is built a stop signal raises Stopped (nothing is saved yet); from then on it is
    noted, and the walk ends at the next point where all is saved."""
    walked = Walked()
    with ExitStack() as noting:
        _walk_legs(runs, course, build, stop, done, say_legs, walked, noting)
    walked.signum = stop()
    return walked


def _walk_legs(runs: Sequence[Run], course: Course, build: Build, stop: StopRequest,
               done: Callable[[Leg], Callable[[np.ndarray], bool] | None], say_legs: bool,
               walked: Walked, noting: ExitStack) -> None:
    running = list(range(len(runs)))
    images: dict[int, np.ndarray] = {}
    first, seconds = course.first, course.seconds
    for number, planned in enumerate(course.legs()):
        leg = planned if course.each_from_zero else dataclasses.replace(
            planned, first=first, seconds=seconds)
        if number:  # between legs: the last one's results are kept, so a stop ends here
            pause_point("leg", lambda: stop() is not None)
            if stop() is not None:
                break
        scaled = {i: runs[i].at(leg.stage.size) for i in running}
        shape = scaled[running[0]].content.shape[:2]
        members = [runs[i].member(leg, scaled[i], _start(runs[i], scaled[i], images.get(i), shape))
                   for i in running]
        if say_legs:
            log.info("scale %d/%d: content %dx%d; styles %s%s", leg.number, leg.count, shape[1],
                     shape[0], ", ".join(f"{w}x{h}" for w, h in scaled[running[0]].style_sizes),
                     f"; {len(running)} runs in one batch" if len(running) > 1 else "")
        step, reused = build(leg.stage, shape, len(running))
        if not number:  # the first step is built: from here on a stop is only noted, for
            noting.enter_context(stop.noted())  # the loop to end at a point where all is saved
        step.start_batch(members)
        callbacks = [runs[i].callbacks(leg, scaled[i], member, step, reused)
                     for member, i in enumerate(running)]
        outcomes, _ = optimise_batch(step, leg.iterations, callbacks, leg.first,
                                     leg.seconds, done=done(leg), stop=stop)
        pause_point("save", lambda: stop() is not None)
        for member, (i, outcome) in enumerate(zip(running, outcomes, strict=True)):
            walked.outcomes[i], walked.scaled[i], walked.legs[i] = outcome, scaled[i], leg
            walked.images[i] = step.result(member)
            if outcome.status == "ok":
                images[i] = walked.images[i]
                runs[i].keep(leg, scaled[i], images[i], outcome)
        running = [i for i in running if walked.outcomes[i].status == "ok"]
        if stop() is not None or not running:
            break
        last = walked.outcomes[running[0]]
        first, seconds = last.iteration, last.progress.seconds


class FlatLoss:
    """Ends a frame once its total fell by less than `tolerance` (a share) over `window`
    iterations: Ruder et al.'s stopping rule."""

    def __init__(self, tolerance: float, window: int) -> None:
        self.tolerance, self.window, self.totals = tolerance, window, []

    def __call__(self, rows: np.ndarray) -> bool:
        self.totals.append(float(rows[0, 0]))
        if not self.tolerance or len(self.totals) <= self.window:
            return False
        before, now = self.totals[-1 - self.window], self.totals[-1]
        return (before - now) <= self.tolerance * abs(before)


def _start(run: Run, scaled: Scaled, previous: np.ndarray | None, shape: tuple[int, int]
           ) -> np.ndarray:
    """Where a run's leg starts: the previous leg's result upsampled, or the run's first image
    (init, a resumed snapshot, a warped frame)."""
    keras.utils.set_random_seed(run.seed)
    if previous is not None:
        return upsampled(previous, shape)
    return run.first_image(scaled)


def upsampled(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A coarser leg's result (or a snapshot) at the next leg's (height, width)."""
    if image.shape[:2] == tuple(shape):
        return image
    return tf.image.resize(image, shape, method="bicubic").numpy()


def stop_line(signum: int, at: str, kept: str, continue_with: str | None) -> str:
    """The line for a run a stop signal ended."""
    line = f"stopped by {signal.Signals(signum).name} at {at}; {kept}"
    return f"{line}; continue with: {continue_with}" if continue_with else line
