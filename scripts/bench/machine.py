"""The machine the benchmark runs on, described by itself: CPU model and ISA flags (from
/proc/cpuinfo, else lscpu), cores, memory, library versions, the load, and the environment
variables that change how fast the numeric libraries are."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import ROOT

# ISA extensions that decide GEMM and convolution speed, in the order the report lists them.
ISA_FLAGS = (
    "sse4_2", "avx", "fma", "avx2", "avx_vnni", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "amx_int8", "amx_fp16",
    "asimd", "sve", "sve2", "bf16", "i8mm",  # Arm, where there is no AVX
)
# Environment variables that change which kernels and how many threads the libraries use.
PERFORMANCE_VARIABLES = (
    "OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS",
    "TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ONEDNN_DEFAULT_FPMATH_MODE",
    "OPENBLAS_NUM_THREADS", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "MKL_NUM_THREADS",
)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's fields of /proc/cpuinfo, and the physical cores of all of them."""
    blocks = [block for block in text.strip().split("\n\n") if block.strip()]
    first: dict[str, str] = {}
    cores = set()
    for index, block in enumerate(blocks):
        fields = {}
        for line in block.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        cores.add((fields.get("physical id", "0"), fields.get("core id", str(index))))
        if index == 0:
            first = fields
    flags = (first.get("flags") or first.get("Features") or "").split()
    return {
        "model": first.get("model name") or first.get("Processor") or first.get("cpu model"),
        "vendor": first.get("vendor_id") or first.get("CPU implementer"),
        "family": first.get("cpu family"), "model_number": first.get("model"),
        "stepping": first.get("stepping"), "flags": flags,
        "logical": len(blocks), "physical": len(cores) if blocks else None,
    }


def parse_lscpu(text: str) -> dict[str, Any]:
    """The same fields from `lscpu`'s output (where /proc/cpuinfo is missing or says little)."""
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    sockets, per_socket = number("Socket(s)"), number("Core(s) per socket")
    return {
        "model": fields.get("Model name"), "vendor": fields.get("Vendor ID"),
        "family": fields.get("CPU family"), "model_number": fields.get("Model"),
        "stepping": fields.get("Stepping"), "flags": fields.get("Flags", "").split(),
        "logical": number("CPU(s)"),
        "physical": sockets * per_socket if sockets and per_socket else None,
        "caches": {key: fields[key] for key in ("L1d cache", "L2 cache", "L3 cache")
                   if key in fields},
        "hypervisor": fields.get("Hypervisor vendor"),
    }


def describe_cpu() -> dict[str, Any]:
    """CPU model, vendor, family/model/stepping, ISA flags, cores and caches of this machine."""
    cpu: dict[str, Any] = {}
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        cpu = parse_cpuinfo(cpuinfo.read_text(errors="replace"))
    try:
        lscpu = parse_lscpu(subprocess.run(["lscpu"], capture_output=True, text=True,
                                           check=False, timeout=30).stdout)
    except (OSError, subprocess.SubprocessError):
        lscpu = {}
    for key, value in lscpu.items():
        if not cpu.get(key):
            cpu[key] = value
    cpu["model"] = cpu.get("model") or platform.processor() or platform.machine()
    flags = set(cpu.pop("flags", None) or ())
    cpu["isa"] = [flag for flag in ISA_FLAGS if flag in flags]
    cpu["amx"] = any(flag.startswith("amx") for flag in flags)
    cpu["virtualised"] = "hypervisor" in flags or bool(cpu.get("hypervisor"))
    return cpu


def memory_bytes() -> dict[str, int]:
    """Total and available RAM (/proc/meminfo; sysconf for the total elsewhere)."""
    meminfo = Path("/proc/meminfo")
    result = {}
    if meminfo.exists():
        for line in meminfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("MemTotal", "MemAvailable"):
                result[key] = int(value.split()[0]) * 1024
    total = result.get("MemTotal") or os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"total": total, "available": result.get("MemAvailable", total)}


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), which can be fewer than exist."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe() -> dict[str, Any]:
    """The machine, the software and the load at the start of a run."""
    import keras
    import numpy
    import tensorflow as tf

    cpu = describe_cpu()
    memory = memory_bytes()
    return {
        "source": source_revision(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "tensorflow": tf.__version__, "keras": keras.__version__, "numpy": numpy.__version__,
        "python": platform.python_version(), "os": f"{platform.system()} {platform.release()}",
        "cpu": cpu["model"], "cpu_details": cpu,
        "cores": os.cpu_count(), "usable_cores": usable_cores(),
        "physical_cores": cpu.get("physical"),
        "isa": cpu["isa"],
        # kept for reports of earlier runs, which read it
        "bf16_instructions": [f for f in cpu["isa"] if "bf16" in f or f.startswith("amx")],
        "memory_bytes": memory["total"], "memory_available_bytes": memory["available"],
        "loadavg_start": os.getloadavg()[0], "loadavg_start_1_5_15": list(os.getloadavg()),
        "variables": {k: os.environ[k] for k in PERFORMANCE_VARIABLES if k in os.environ},
    }


def source_revision() -> str:
    """The commit measured; a full run may be made from a copy of the tree with SOURCE_COMMIT."""
    snapshot = ROOT / "SOURCE_COMMIT"
    if snapshot.exists():
        return f"{snapshot.read_text().strip()[:12]} + working-tree changes (snapshot)"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit[:12] + (" + working-tree changes" if dirty else "")


def isa_of(env: Mapping[str, Any]) -> list[str]:
    """The ISA flags a run recorded (runs before `isa` was recorded kept only the bf16 ones)."""
    return list(env.get("isa") or env.get("bf16_instructions") or [])


def cpu_label(env: Mapping[str, Any]) -> str:
    """'AMD EPYC (AuthenticAMD family 26 model 2)': the model name and, where known, its ids."""
    details = env.get("cpu_details") or {}
    ids = [str(details["vendor"])] if details.get("vendor") else []
    ids += [f"{name} {details[key]}" for name, key in
            (("family", "family"), ("model", "model_number")) if details.get(key)]
    return f"{env['cpu']} ({' '.join(ids)})" if ids else str(env["cpu"])


def isa_summary(isa: Sequence[str]) -> str:
    """The widest vector and matrix extensions, e.g. 'AVX2, AVX-512, avx512_bf16; no AMX'."""
    flags = set(isa)
    if not flags:
        return "not recorded"
    if not flags & {"sse4_2", "avx", "asimd"}:  # an older record that kept only some flags
        return f"only {', '.join(isa)} recorded"
    bf16 = any("bf16" in flag for flag in flags)
    if "asimd" in flags:  # Arm
        parts = [name for flag, name in (("asimd", "NEON"), ("sve", "SVE"), ("sve2", "SVE2"),
                                         ("bf16", "bf16"), ("i8mm", "i8mm")) if flag in flags]
        notes = []
    else:
        parts = [name for flag, name in (("avx2", "AVX2"), ("avx512f", "AVX-512"))
                 if flag in flags] or ["no AVX2"]
        parts += [flag for flag in ("avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16")
                  if flag in flags]
        notes = [] if any(flag.startswith("amx") for flag in flags) else ["no AMX"]
    if not bf16:
        notes.append("no bf16 instructions")
    return ", ".join(parts) + (f"; {', '.join(notes)}" if notes else "")
