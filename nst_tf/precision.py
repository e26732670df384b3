"""precision=auto: the precision whose real step is faster on this machine.

bf16 is ~4x fp32 on a CPU with AMX, ~1.8x with avx512_bf16, and ~9x *slower* where only AVX2
exists (no native bf16 convolution), so no fixed choice suits every machine. On a CPU a short
probe of the real compiled step decides, once per machine (CPU model and flags, TensorFlow
version), cached (nst_tf.probes); on a GPU, bf16 where the device computes it natively
(compute capability 8+).
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nst_tf.probes import machine, remembered

PROBE_SIZE = 96  # px: the real step's cost per pixel, small enough to be cheap where bf16 is slow
MARGIN = 1.1  # bf16 must be this much faster to be picked: a tie is not worth its rounding


@dataclass(frozen=True)
class Choice:
    """What precision=auto chose and why."""

    used: str  # fp32 or bf16
    bf16_speedup: float | None  # fp32 step time / bf16 step time (None: not probed, on a GPU)
    device: str
    source: str  # "probed", "cached" or "gpu"


def choose(probe: Callable[[str], float], cache_dir: Path) -> Choice:
    """The faster precision here. `probe(precision)` times the real step (seconds per step);
    its answer is cached per machine under `cache_dir`."""
    found = machine()
    if found["device"].startswith("GPU"):
        native = (found["compute_capability"] or (0, 0))[0] >= 8
        return Choice("bf16" if native else "fp32", None, found["device"], "gpu")

    def measure() -> dict:
        speedup = probe("fp32") / probe("bf16")
        return {"used": "bf16" if speedup >= MARGIN else "fp32", "bf16_speedup": speedup,
                "device": found["device"]}

    kept = remembered(cache_dir, "precision", {}, ("used", "bf16_speedup", "device"), measure)
    answer = kept.answer
    assert answer is not None  # measure() always answers
    return Choice(answer["used"], answer["bf16_speedup"], answer["device"], kept.source)
