"""The whole run, and the command line of `scripts/bench.py` (also the entry of the probes that
need a fresh process: `probe-memory` and `probe-numpy`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import DOCS, HISTORY
from . import history as machines
from .harness import Builder, settings_for
from .machine import describe
from .plan import FULL, QUICK, Plan
from .report import BUSY_LOAD, one_line, write_report
from .roofline import matmul_peak, numpy_peak, probe_numpy, vgg_flops
from .sections import (
    probe_memory,
    resolve_precision,
    section_cli_and_time_to_quality,
    section_coarse_to_fine,
    section_eager,
    section_memory,
    section_peer,
    section_preset_check,
    section_quality,
    section_step_time,
    section_sweep,
    section_tuning,
)


def run_benchmark(plan: Plan, out: Path, history: Path = HISTORY,
                  log: Callable[[str], None] = print, peer: str | None = None) -> dict[str, Any]:
    """Measure every section, write `performance.json`, `PERFORMANCE.md` and the figures; a
    full run also adds its headline figures to `history`. `peer`: a Python with torch, for
    the PyTorch peer's section (skipped without it)."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Every section builds new compiled steps on purpose; TF's retracing warnings are noise here.
    tf.get_logger().setLevel("ERROR")
    results: dict[str, Any] = {"plan": asdict(plan), "environment": describe()}
    if results["environment"]["loadavg_start"] > BUSY_LOAD:
        log(f"warning: load average {results['environment']['loadavg_start']:.2f}; "
            "other work on this machine will skew the timings")
    builder = Builder()
    results["numpy_peak"] = numpy_peak(plan.numpy_sizes, plan.matmul_repeats)
    results["matmul_peak"] = {p: matmul_peak(p, plan.matmul_sizes, plan.matmul_repeats)
                              for p in plan.precisions}
    log("matmul peak: " + ", ".join(f"TF {p} {v['gflops']:.0f} GFLOP/s"
                                    for p, v in results["matmul_peak"].items())
        + f", NumPy fp32 {results['numpy_peak']['gflops']:.0f} GFLOP/s")
    size = plan.headline_size
    default = settings_for()
    results["flops"] = vgg_flops(builder.extractor(default), default.style_layers, size, size)
    results["step_time"] = section_step_time(plan, builder, log)
    cli_precision = resolve_precision(plan.cli_precision, results["step_time"], size)
    tune_precision = resolve_precision(plan.tune_precision, results["step_time"], size)
    results["eager"] = section_eager(plan, builder, log)
    results["quality"], results["determinism"] = section_quality(plan, builder, out, log)
    results["tuning"] = section_tuning(plan, tune_precision, builder, log)
    with tempfile.TemporaryDirectory(prefix="nst-bench-") as scratch:
        results["memory"] = section_memory(plan, results["environment"]["memory_bytes"], log)
        results["sweep"] = section_sweep(plan, Path(scratch), log)
        results["cli_run"], results["time_to_quality"] = section_cli_and_time_to_quality(
            plan, cli_precision, Path(scratch), out, log
        )
        results["coarse_to_fine"] = section_coarse_to_fine(
            plan, Path(scratch), results["cli_run"], log)
        results["preset_check"] = section_preset_check(
            plan, cli_precision, Path(scratch), results, log)
        if peer:
            results["peer"] = section_peer(plan, cli_precision, peer, builder, Path(scratch), log)
    results["environment"]["loadavg_end"] = os.getloadavg()[0]
    results["total_seconds"] = time.perf_counter() - started
    write_report(results, out, machines.load(history))
    if plan.name == FULL.name:
        machines.append(history, machines.headline(results))
    return results


def main(argv: Sequence[str] | None = None) -> None:
    """`scripts/bench.py [--quick | --render] [--out DIR] [--history FILE]`, and the probes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe-memory"]:
        size, precision, steps = int(argv[1]), argv[2], int(argv[3])
        print(json.dumps(probe_memory(size, precision, steps)))
        return
    if argv[:1] == ["probe-numpy"]:
        repeats, sizes = int(argv[1]), [int(n) for n in argv[2:]]
        print(json.dumps(probe_numpy(sizes, repeats)))
        return
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py",
        description="Measure nst-tf's performance on this machine and write PERFORMANCE.md, "
        "performance.json and figures.")
    parser.add_argument("--quick", action="store_true",
                        help="every section at tiny sizes (a smoke test; minutes, not numbers)")
    parser.add_argument("--out", type=Path, default=DOCS,
                        help="folder for PERFORMANCE.md, performance.json and figures "
                        "(default: the checkout's docs/)")
    parser.add_argument("--history", type=Path, default=HISTORY,
                        help="earlier machines' headline figures; a full run adds its own "
                        "(default: docs/performance_history.json)")
    parser.add_argument("--peer", metavar="PYTHON",
                        help="a Python with torch (a throwaway venv, never the project's): adds "
                        "the PyTorch L-BFGS peer's section")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite the report from OUT/performance.json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads((args.out / "performance.json").read_text())
        write_report(results, args.out, machines.load(args.history))
        print(one_line(results))
        return
    plan = QUICK if args.quick else FULL
    results = run_benchmark(plan, args.out, args.history,
                            log=lambda m: print(m, file=sys.stderr), peer=args.peer)
    print(one_line(results))
