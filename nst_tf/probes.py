"""What a short probe of the real compiled step found on this machine, kept in the cache dir:
precision=auto (precision.py) and batch_size=auto (batching.py) probe once and reuse the answer.

An answer holds for one machine (the device, the CPU model and the flags that change kernels'
speed, TensorFlow's version) and whatever else the caller names (`facts`); a new TensorFlow or
another CPU probes again.
"""

import hashlib
import json
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from nst_tf.files import write_atomic
from nst_tf.transfer import Member, StyleTransfer, Weights

PROBE_STEPS = 3  # timed; their median leaves out the first, slower after a start
# The CPU flags that decide the kernels' speed; others do not change the answer.
_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_bf16",
          "amx_tile", "amx_int8", "fma", "sve", "asimd", "bf16")


@dataclass(frozen=True)
class Found:
    """A probe's answer (None: the caller measured nothing worth keeping), whether it was
    probed now or read from `path`, where it is kept."""

    answer: dict[str, Any] | None
    source: str  # "probed" or "cached"
    path: Path


def machine() -> dict[str, Any]:
    """What a probe's answer depends on: the device, the CPU model and flags, TensorFlow's
    version."""
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


def remembered(cache_dir: Path, kind: str, facts: Mapping[str, Any], fields: Sequence[str],
               measure: Callable[[], dict[str, Any] | None]) -> Found:
    """The answer kept under `cache_dir`/`kind` for this machine and `facts`, or `measure()`'s,
    then kept (unless None). A damaged entry, or one without `fields`, is measured again."""
    found = machine()
    key = hashlib.sha256(json.dumps({**found, **facts}, sort_keys=True).encode()).hexdigest()
    path = Path(cache_dir) / kind / f"{key[:16]}.json"
    try:
        cached = json.loads(path.read_text())
        if all(name in cached for name in fields):
            return Found(cached, "cached", path)
    except (OSError, ValueError, TypeError):
        pass  # not probed yet here, or a damaged entry: probe (again)
    answer = measure()
    if answer is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        kept = {**answer, "machine": found, **({"facts": dict(facts)} if facts else {})}
        write_atomic(path, json.dumps(kept, indent=2).encode())
    return Found(answer, "probed", path)


def step_seconds(transfers: Sequence[StyleTransfer], weights: Weights) -> list[float]:
    """Each built transfer's median time of PROBE_STEPS steps, every member started on noise;
    the transfers step in turn, so a machine's changing load falls on each alike."""
    rng = np.random.default_rng(0)

    def noise(shape: tuple[int, int]) -> np.ndarray:
        return rng.uniform(0, 255, (*shape, 3)).astype(np.float32)

    for transfer in transfers:
        transfer.start_batch([Member(noise(transfer.shape), noise(transfer.shape),
                                     noise(transfer.shape), weights)
                              for _ in range(transfer.batch)])
    times: list[list[float]] = [[] for _ in transfers]
    for _ in range(PROBE_STEPS):
        for transfer, taken in zip(transfers, times, strict=True):
            started = time.perf_counter()
            transfer.step_values()
            taken.append(time.perf_counter() - started)
    return [statistics.median(taken) for taken in times]
