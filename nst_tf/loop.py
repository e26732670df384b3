"""The one loop every run walks: a still, a batch, a multi-scale still, each frame of a clip
(its coarse scales, then the clip's size) and each image of a folder. Per leg of the course:
each run's pictures at that size and first image, the compiled step, its members, their
callbacks, the optimiser loop, and what each run keeps of the leg; how each run ended, and
the line that says so."""

import dataclasses
import logging
import signal
from collections import deque
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
from nst_tf.transfer import Member, Outcome, Rule, StyleTransfer, View, optimise_batch

log = logging.getLogger("nst_tf")

# A leg's compiled step for (stage, content shape, batch), and whether it was reused.
Build = Callable[[Stage, tuple[int, int], int], tuple[StyleTransfer, bool]]
# Run i's stop rule on a leg (none: it runs the leg's every iteration), made anew per leg.
Done = Callable[[int, Leg], Rule | None]


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
         done: Done = lambda run, leg: None, say_legs: bool = True) -> Walked:
    """Walk `course` for `runs` as one batch (one compiled step per leg). A run whose leg does
    not end "ok" ends there; the others go on. A stop signal lets every running run save, and
    the walk ends. `done(i, leg)` makes run i's stop rule on a leg (see optimise_batch): a run
    whose leg converged goes on to its next leg with its batch mates. Until the first leg's
    step is built a stop signal raises Stopped (nothing is saved yet); from then on it is
    noted, and the walk ends at the next point where all is saved."""
    walked = Walked()
    with ExitStack() as noting:
        _walk_legs(runs, course, build, stop, done, say_legs, walked, noting)
    walked.signum = stop()
    return walked


def _walk_legs(runs: Sequence[Run], course: Course, build: Build, stop: StopRequest,
               done: Done, say_legs: bool, walked: Walked, noting: ExitStack) -> None:
    running = list(range(len(runs)))
    images: dict[int, np.ndarray] = {}
    first, seconds = course.first, course.seconds
    firsts = dict.fromkeys(running, first)  # each run's count: runs of a batch converge apart
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
        outcomes, _ = optimise_batch(
            step, leg.iterations, callbacks, leg.first if course.each_from_zero else
            [firsts[i] for i in running], leg.seconds, done=[done(i, leg) for i in running],
            stop=stop)
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
        firsts = {i: walked.outcomes[i].iteration for i in running}
        first = min(firsts.values())
        seconds = max(walked.outcomes[i].progress.seconds for i in running)


class Converged:
    """A run's stop rule (transfer.Rule): it has converged once, over the last `window`
    iterations, its total loss fell by at most `tolerance` (a share of it; Ruder et al.'s rule
    for video frames) and its image changed by at most `change` (the mean absolute change of a
    pixel's channels, 0-255). A criterion at 0 is off; `rule` makes none when both are."""

    PARTS = 5  # the image is looked at every window/PARTS iterations, kept PARTS + 1 times

    def __init__(self, tolerance: float, window: int, change: float = 0.0) -> None:
        self.tolerance, self.window, self.change = tolerance, window, change
        self.totals: deque[float] = deque(maxlen=window + 1)
        self.every = max(1, window // self.PARTS)
        self.images: deque[np.ndarray] = deque(maxlen=window // self.every + 1)
        self.steps = 0

    @classmethod
    def rule(cls, tolerance: float, window: int, change: float = 0.0) -> "Converged | None":
        return cls(tolerance, window, change) if tolerance or change else None

    def __call__(self, values: np.ndarray, run: View) -> bool:
        self.steps += 1
        self.totals.append(float(values[0]))
        flat = not self.tolerance or self._fell_by() <= self.tolerance
        if not self.change:
            return self.tolerance > 0 and flat and self.steps > self.window
        if self.steps % self.every:
            return False
        self.images.append(np.clip(run.result(), 0, 255))
        return flat and len(self.images) == self.images.maxlen and float(
            np.abs(self.images[-1] - self.images[0]).mean()) <= self.change

    def _fell_by(self) -> float:
        """The total's fall over the window, a share of it then (inf: no window yet)."""
        if len(self.totals) <= self.window:
            return float("inf")
        before, now = self.totals[0], self.totals[-1]
        return (before - now) / abs(before) if before else 0.0


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
