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

from . import HISTORY, OUTPUTS
from . import history as machines
from .batching import one_line as batch_line
from .batching import run_alone, section_batch, write_alone
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
    """Measure every section, write `performance.json`, `PERFORMANCE.md` and the figures into
    `out`; a full run also writes `history` with its own headline figures added into `out`.
    `peer`: a Python with torch, for the PyTorch peer's section (skipped without it)."""
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
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
        results["batch"] = section_batch(plan, builder, Path(scratch), log)
        if peer:
            results["peer"] = section_peer(plan, cli_precision, peer, builder, Path(scratch), log)
    results["environment"]["loadavg_end"] = os.getloadavg()[0]
    results["total_seconds"] = time.perf_counter() - started
    write_report(results, out, machines.load(history))
    if plan.name == FULL.name:
        machines.record(out, history, machines.headline(results))
    return results


def default_out() -> Path:
    """A new folder per run: the committed docs/ change only when asked for (`--out docs`)."""
    return OUTPUTS / time.strftime("%Y-%m-%d_%H-%M-%S")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """The command line, with `out` filled in."""
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py",
        description="Measure nst-tf's performance on this machine and write PERFORMANCE.md, "
        "performance.json and figures.")
    parser.add_argument("--quick", action="store_true",
                        help="every section at tiny sizes (a smoke test; minutes, not numbers)")
    parser.add_argument("--out", type=Path,
                        help="folder for PERFORMANCE.md, performance.json and figures (default: "
                        "a new one, outputs/bench/<date>_<time>; --out docs regenerates the "
                        "checkout's docs)")
    parser.add_argument("--history", type=Path, default=HISTORY,
                        help="earlier machines' headline figures, shown beside this run's; a "
                        "full run writes them with its own added to OUT/performance_history.json "
                        "(default: docs/performance_history.json)")
    parser.add_argument("--peer", metavar="PYTHON",
                        help="a Python with torch (a throwaway venv, never the project's): adds "
                        "the PyTorch L-BFGS peer's section")
    parser.add_argument("--only", choices=["batch"],
                        help="measure only this section (with --quick: its quick plan); its "
                        "targets and report alone")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite the report from OUT/performance.json")
    args = parser.parse_args(argv)
    if args.out is None:
        if args.render:
            parser.error("--render rewrites an earlier report: give its folder, e.g. --out docs")
        args.out = default_out()
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """`scripts/bench.py [--quick | --render] [--only batch] [--out DIR] [--history FILE]`,
    and the probes."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe-memory"]:
        import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)

        size, precision, steps = int(argv[1]), argv[2], int(argv[3])
        batch = int(argv[4]) if len(argv) > 4 else 1
        print(json.dumps(probe_memory(size, precision, steps, batch)))
        return
    if argv[:1] == ["probe-numpy"]:
        repeats, sizes = int(argv[1]), [int(n) for n in argv[2:]]
        print(json.dumps(probe_numpy(sizes, repeats)))
        return
    args = parse_args(argv)
    if args.render:
        saved = args.out / "performance.json"
        if not saved.is_file():
            sys.exit(f"scripts/bench.py: error: no {saved}; --out names a folder a run wrote")
        results = json.loads(saved.read_text())
        if results.get("only") == "batch":
            write_alone(results, args.out)
            print(batch_line(results))
            return
        write_report(results, args.out, machines.load(args.history))
        print(one_line(results))
        return
    plan = QUICK if args.quick else FULL
    print(f"writing the report to {args.out}", file=sys.stderr)
    if args.only:
        results = run_alone(plan, args.out, log=lambda m: print(m, file=sys.stderr))
        print(batch_line(results))
        return
    results = run_benchmark(plan, args.out, args.history,
                            log=lambda m: print(m, file=sys.stderr), peer=args.peer)
    print(one_line(results))
