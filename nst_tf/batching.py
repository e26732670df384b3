"""batch_size=auto: how many images per step give the most images per second here.

Whether a batch pays depends on the device, the image size and the precision (on one Zen 4
CPU 4 images per step made 1.60x as many images per second as one in bf16 at 256 px, and 0.72x
in fp32 at 512 px; docs/BATCHING.md), so nothing is assumed of a device: a short probe of the
real compiled step times one image per step against 2, 4, ... images (in turn with one image
per step, so a machine's changing load falls on both; as many as the jobs and the memory check
allow), once per machine and step (shape, precision, backbone, optimiser, style loss), kept
in the cache (nst_tf.probes). A batch runs only where it beat one image per step by
MARGIN, and the probe runs only where it costs a small share of the jobs' time; where the
one-image build's first step already shows it would not, no step is timed, and the jobs run as
under the plain launcher, on that one step.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_tf.probes import PROBE_STEPS, remembered

# A batch must make this many times the images per second of one image per step: the issue's
# target for a batched sweep (1.25x sooner), and room for what the probe cannot see. On a
# loaded machine the median of five steps of one step moved by 25% between two builds, and
# sizes timed one after another (not in turn) found 1.27x where the sweep ran 0.98x
# (docs/BATCHING.md); a batch also costs what is not timed (another compiled step where the
# jobs do not divide evenly). A smaller gain is not worth the risk of a slower sweep.
MARGIN = 1.25
# The probe of larger batches runs only if it would cost at most this share of the jobs' time
# at one image per step: half of what a batch at the 1.25x target would save.
PROBE_SHARE = 0.1


@dataclass(frozen=True)
class Timing:
    """One batch size's probe: seconds per step, seconds its step took to build, and seconds
    per step of one image per step, timed in turn with it."""

    step: float
    build: float
    one: float


@dataclass(frozen=True)
class BatchChoice:
    """How many images per step, and why."""

    batch: int
    speedups: dict[int, float]  # images per second by batch size over one image per step's
    source: str  # "probed", "cached" or "not probed"
    path: Path | None = None  # where the speedups are kept
    why: str = ""  # why not probed

    def line(self) -> str:
        """What the log says of it."""
        images = "one image" if self.batch == 1 else f"{self.batch} images"
        if self.source == "not probed":
            return f"batch_size=auto: {images} per step; not probed: {self.why}"
        found = ", ".join(f"B={b} {x:.2f}x" for b, x in sorted(self.speedups.items()) if b > 1)
        return (f"batch_size=auto: {images} per step (images per second against one image per "
                f"step here: {found}; a batch needs {MARGIN}x; {self.source}, kept in "
                f"{self.path})")


def decide(speedups: Mapping[int, float], cap: int) -> int:
    """The batch size (at most `cap`) with the most images per second, if that beats one image
    per step by MARGIN; else 1."""
    best = max((b for b in speedups if b <= cap), key=speedups.__getitem__)
    return best if speedups[best] >= MARGIN else 1


def choose(built: Callable[[], Timing], measure: Callable[[int], Timing], cap: int,
           steps: float, cache_dir: Path, facts: Mapping[str, Any]) -> BatchChoice:
    """The batch size for jobs that share a compiled step. `built()` builds the one-image step
    the jobs run if no batch pays (its `step`: its first step's seconds, at least a step's);
    `measure(1)` times that step, `measure(b)` builds the real step for b images and times it
    in turn with one image per step; `cap` (2 or more): the most that may run at once; `steps`:
    the jobs' steps at one image per step (their iterations, weighted by each stage's pixels);
    `facts`: what else than the machine the answer depends on."""
    skipped = []

    def too_dear(one: Timing) -> bool:
        """Whether probing 2 images per step would cost over PROBE_SHARE of the jobs' time
        (noted in `skipped`); the slower `one.step`, the more the jobs leave room to probe."""
        cost, jobs = _cost(2, one, one), steps * one.step
        if cost <= PROBE_SHARE * jobs:
            return False
        skipped.append(f"probing 2 images per step would cost about {cost:.0f} s, over "
                       f"{PROBE_SHARE:.0%} of these jobs' {jobs:.0f} s at one image per step")
        return True

    def probe() -> dict[str, Any] | None:
        # A sweep too short to probe at the bound times no step: the jobs run the step just
        # built, as under the plain launcher. Else one image per step is timed, once per
        # machine and step (kept even where no probe follows, so a later sweep times nothing).
        bound = built()
        if too_dear(bound):
            return None
        seconds = remembered(cache_dir, "step", facts, ("seconds",),
                             lambda: {"seconds": measure(1).step}).answer["seconds"]
        if too_dear(one := Timing(seconds, bound.build, seconds)):
            return None
        budget, spent = PROBE_SHARE * steps * one.step, 0.0
        speedups, last, batch = {1: 1.0}, one, 2
        while batch <= cap and spent + _cost(batch, last, one) <= budget:
            last = measure(batch)
            spent += last.build + PROBE_STEPS * (batch * last.step + last.one)
            speedups[batch] = batch * last.one / last.step
            if speedups[batch] <= max(x for b, x in speedups.items() if b < batch):
                break  # past the best: larger batches only add memory traffic
            batch *= 2
        return {"speedups": {str(b): x for b, x in speedups.items()},
                "images_per_second": 1 / one.step}

    kept = remembered(cache_dir, "batch", facts, ("speedups",), probe)
    if kept.answer is None:
        return BatchChoice(1, {}, "not probed", why=skipped[0])
    speedups = {int(b): x for b, x in kept.answer["speedups"].items()}
    return BatchChoice(decide(speedups, cap), speedups, kept.source, kept.path)


def _cost(batch: int, last: Timing, one: Timing) -> float:
    """What probing `batch` images per step costs: its build (about the last one's), its steps
    and one image's, and building it again if it wins."""
    return 2 * last.build + PROBE_STEPS * (batch + 1) * one.step
