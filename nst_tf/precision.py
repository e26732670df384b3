"""precision=auto: the precision whose real step is faster on this machine.

bf16 is ~4x fp32 on a CPU with AMX, ~1.8x with avx512_bf16, and ~9x *slower* where only AVX2
exists (no native bf16 convolution), so no fixed choice suits every machine. On a CPU a short
probe of the real compiled step decides, once per machine (CPU model and flags, TensorFlow
version), cached; on a GPU, bf16 where the device computes it natively (compute capability 8+).
"""

import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from nst_tf.files import write_atomic

PROBE_SIZE = 96  # px: the real step's cost per pixel, small enough to be cheap where bf16 is slow
PROBE_STEPS = 3  # timed, after the step each build runs once
MARGIN = 1.1  # bf16 must be this much faster to be picked: a tie is not worth its rounding
# The CPU flags that decide bf16's speed; others do not change the answer.
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
          "amx_tile", "amx_int8", "fma", "sve", "asimd", "bf16")


@dataclass(frozen=True)
class Choice:
    """What precision=auto chose and why."""

    used: str  # fp32 or bf16
    bf16_speedup: float | None  # fp32 step time / bf16 step time (None: not probed, on a GPU)
    device: str
    source: str  # "probed", "cached" or "gpu"


def machine() -> dict[str, Any]:
    """What the choice depends on: the device, the CPU model and flags, TensorFlow's version."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        device = f"GPU {details.get('device_name', gpus[0].name)}"
        return {"device": device, "compute_capability": details.get("compute_capability"),
                "tensorflow": tf.__version__}
    model, flags = platform.processor() or platform.machine(), set()
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        cpuinfo = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            model = value.strip()
        elif key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return {"device": f"CPU {model}", "flags": sorted(flags & set(_FLAGS)),
            "tensorflow": tf.__version__}


def choose(probe: Callable[[str], float], cache_dir: Path) -> Choice:
    """The faster precision here. `probe(precision)` times the real step (seconds per step);
    its answer is cached per machine under `cache_dir`."""
    found = machine()
    if found["device"].startswith("GPU"):
        native = (found["compute_capability"] or (0, 0))[0] >= 8
        return Choice("bf16" if native else "fp32", None, found["device"], "gpu")
    key = hashlib.sha256(json.dumps(found, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "precision" / f"{key}.json"
    try:
        cached = json.loads(path.read_text())
        return Choice(cached["used"], cached["bf16_speedup"], cached["device"], "cached")
    except (OSError, ValueError, KeyError):
        pass  # not probed yet here, or a damaged entry: probe (again)
    speedup = probe("fp32") / probe("bf16")
    choice = Choice("bf16" if speedup >= MARGIN else "fp32", speedup, found["device"], "probed")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({**asdict(choice), "machine": found}, indent=2).encode())
    return choice


def step_seconds(transfer: Any, weights: Any) -> float:
    """The median time of PROBE_STEPS steps of a built transfer, started on noise."""
    height, width = transfer.shape
    rng = np.random.default_rng(0)
    content, style, init = (rng.uniform(0, 255, (height, width, 3)).astype(np.float32)
                            for _ in range(3))
    transfer.start(content, style, init, weights)
    times = []
    for _ in range(PROBE_STEPS):
        started = time.perf_counter()
        transfer.step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)
