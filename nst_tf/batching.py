"""batch_size=auto: how many images per step give the most images per second here.

Whether a batch pays depends on the device, the image size and the precision (on one Zen 4
CPU 4 images per step made 1.60x as many images per second as one in bf16 at 256 px, and 0.72x
in fp32 at 512 px; docs/BATCHING.md), so nothing is assumed of a device: a short probe of the
real compiled step times one image per step against 2, 4, ... (as many as the jobs and the
memory check allow), once per machine and step (shape, precision, backbone, optimiser, style
loss), kept in the cache (nst_tf.probes). A batch runs only where it beat one image per step by
MARGIN, and the probe runs only where it costs a small share of the jobs' time.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_tf.probes import PROBE_STEPS, remembered

# A batch must make this many times the images per second of one image per step: the issue's
# target for a batched sweep (1.25x sooner), and room for what the probe cannot see. On a
# loaded machine the median of three steps moved by up to 25% between two probes of the same
# step (docs/BATCHING.md); a batch also costs what is not timed (another compiled step where
# the jobs do not divide evenly). A smaller gain is not worth the risk of a slower sweep.
MARGIN = 1.25
# The probe of larger batches runs only if it would cost at most this share of the jobs' time
# at one image per step: half of what a batch at the 1.25x target would save.
PROBE_SHARE = 0.1


@dataclass(frozen=True)
class Timing:
    """One batch size's probe: seconds per step, and seconds its step took to build."""

    step: float
    build: float


@dataclass(frozen=True)
class BatchChoice:
    """How many images per step, and why."""

    batch: int
    rates: dict[int, float]  # images per second by batch size, as probed
    source: str  # "probed", "cached" or "not probed"
    path: Path | None = None  # where the rates are kept
    why: str = ""  # why not probed

    def line(self) -> str:
        """What the log says of it."""
        images = "one image" if self.batch == 1 else f"{self.batch} images"
        if self.source == "not probed":
            return f"batch_size=auto: {images} per step; not probed: {self.why}"
        rates = ", ".join(f"B={b} {r:.3g}" for b, r in sorted(self.rates.items()))
        best = max(self.rates, key=self.rates.__getitem__)
        return (f"batch_size=auto: {images} per step (images/s here: {rates}; B={best} "
                f"{self.rates[best] / self.rates[1]:.2f}x of B=1, a batch needs {MARGIN}x; "
                f"{self.source}, kept in {self.path})")


def decide(rates: Mapping[int, float], cap: int) -> int:
    """The batch size (at most `cap`) with the most images per second, if that beats one image
    per step by MARGIN; else 1."""
    best = max((b for b in rates if b <= cap), key=rates.__getitem__)
    return best if rates[best] >= MARGIN * rates[1] else 1


def choose(measure: Callable[[int], Timing], cap: int, steps: float, cache_dir: Path,
           facts: Mapping[str, Any]) -> BatchChoice:
    """The batch size for jobs that share a compiled step. `measure(b)` builds the real step
    for b images and times it; `cap` (2 or more): the most that may run at once; `steps`: the
    jobs' steps at one image per step (their iterations, weighted by each stage's pixels);
    `facts`: what else than the machine the answer depends on."""
    skipped = []

    def probe() -> dict[str, Any] | None:
        one = measure(1)  # the step the jobs run if no batch pays: built now, reused then
        budget, spent = PROBE_SHARE * steps * one.step, 0.0
        rates, last, batch = {1: 1 / one.step}, one, 2
        while batch <= cap:
            # Its build (about the last one's), its steps, and one build again after it.
            cost = last.build + PROBE_STEPS * batch * one.step + one.build
            if spent + cost > budget:
                if len(rates) == 1:
                    skipped.append(f"probing {batch} images per step would cost about "
                                   f"{cost:.0f} s, over {PROBE_SHARE:.0%} of these jobs' "
                                   f"{steps * one.step:.0f} s at one image per step")
                    return None
                break
            last = measure(batch)
            spent += last.build + PROBE_STEPS * batch * last.step
            rates[batch] = batch / last.step
            if rates[batch] <= max(rate for b, rate in rates.items() if b < batch):
                break  # past the best: larger batches only add memory traffic
            batch *= 2
        return {"rates": {str(b): rate for b, rate in rates.items()}}

    kept = remembered(cache_dir, "batch", facts, ("rates",), probe)
    if kept.answer is None:
        return BatchChoice(1, {}, "not probed", why=skipped[0])
    rates = {int(b): rate for b, rate in kept.answer["rates"].items()}
    return BatchChoice(decide(rates, cap), rates, kept.source, kept.path)
