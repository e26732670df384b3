"""The command line of `scripts/bench.py`: run the benchmarks under pytest-benchmark, then
render the report from the JSON it wrote (or only render, `--render`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from . import HERE, HISTORY, OUTPUTS, ROOT
from .checks import checks, merged, same_cpu, with_run
from .report import load_history, write

# Set in some environments to pin OpenBLAS to an older kernel: they slow NumPy's GEMM, the
# peak the step is measured against, so the benchmark runs without them (the report says).
OPENBLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/bench.py", description="Measure nst-tf on this machine; write "
        "PERFORMANCE.md, benchmark.json (pytest-benchmark's) and figures.")
    parser.add_argument("--quick", action="store_true",
                        help="every benchmark at tiny sizes: that it runs, not numbers")
    parser.add_argument("--out", type=Path, help="the report's folder (default: a new "
                        "outputs/bench/<date>_<time>; --out docs regenerates docs/)")
    parser.add_argument("--peer", metavar="PYTHON", help="a Python with torch (a throwaway "
                        "venv, never the project's): time to the PyTorch L-BFGS peer's loss")
    parser.add_argument("--history", type=Path, default=HISTORY,
                        help="earlier machines' headline figures, shown beside this run's")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: render OUT/benchmark.json again")
    parser.add_argument("-k", dest="keyword", help="only the benchmarks pytest's -k selects")
    parser.add_argument("--merge", type=Path, metavar="JSON", help="an earlier run's "
                        "benchmark.json on this CPU: the report keeps what this run does not "
                        "measure again (whole groups, so each ratio stays within one run)")
    args = parser.parse_args(argv)
    args.plan = "quick" if args.quick else "full"
    if args.merge and args.render:
        parser.error("--merge adds to a new measurement; --render measures nothing")
    if args.out is None:
        if args.render:
            parser.error("--render renders an earlier run: name its folder with --out")
        args.out = OUTPUTS / time.strftime("%Y-%m-%d_%H-%M-%S")
    return args


def measure(args: argparse.Namespace, runs: Path) -> int:
    """The benchmarks, in this process, into OUT/benchmark.json; pytest's exit code."""
    import pytest

    unset = [f"{key}={os.environ.pop(key)}" for key in OPENBLAS_PINS if key in os.environ]
    os.environ["NST_BENCH_UNSET"] = " ".join(unset)
    options = [str(HERE), "-q", "-p", "no:cacheprovider", "-o", "python_files=bench_*.py",
               f"--rootdir={ROOT}", f"--plan={args.plan}",
               f"--runs={runs}", f"--benchmark-json={args.out / 'benchmark.json'}",
               f"--benchmark-storage={OUTPUTS / 'storage'}", "--benchmark-autosave",
               "--benchmark-sort=name", "--benchmark-columns=median,min,max,rounds"]
    if args.peer:
        options.append(f"--peer={args.peer}")
    if args.keyword:
        options += ["-k", args.keyword]
    return int(pytest.main(options))


def earlier_run(path: Path, plan: str) -> dict:
    """The run --merge names, refused before measuring anything if another CPU measured it."""
    import cpuinfo  # py-cpuinfo: pytest-benchmark's own machine description

    try:
        earlier = json.loads(path.read_text())
        cpu = earlier["machine_info"]["cpu"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        sys.exit(f"scripts/bench.py: error: --merge {path} is not a benchmark.json this tool "
                 f"wrote ({error}); name an earlier run's OUT/benchmark.json")
    if (its := earlier["machine_info"].get("plan")) != plan:
        sys.exit(f"scripts/bench.py: error: --merge {path} is a {its} run and this one {plan}; "
                 "merge runs of one plan")
    if not same_cpu(cpu, cpuinfo.get_cpu_info()):
        sys.exit(f"scripts/bench.py: error: --merge {path} was measured on another CPU "
                 f"({cpu.get('brand_raw')}, family {cpu.get('family')} model "
                 f"{cpu.get('model')}); merge only runs of this machine")
    return earlier


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    earlier = earlier_run(args.merge, args.plan) if args.merge else None
    saved = args.out / "benchmark.json"
    args.out.mkdir(parents=True, exist_ok=True)
    code = 0
    with tempfile.TemporaryDirectory(prefix="nst-bench-") as runs:
        if not args.render:
            print(f"writing the report to {args.out}", file=sys.stderr)
            code = measure(args, Path(runs))
        if not saved.is_file():
            sys.exit(f"scripts/bench.py: error: no {saved}; --out names a folder a run wrote")
        data = json.loads(saved.read_text())
        if earlier is not None:
            data = merged(data, earlier)
            saved.write_text(json.dumps(data, indent=4))
        history = load_history(args.history)
        if data["machine_info"]["plan"] == "full" and not args.render:
            # This run added, beside the report: docs/ changes only with --out docs.
            history = with_run(history, data)
            (args.out / HISTORY.name).write_text(json.dumps({"machines": history}, indent=1)
                                                 + "\n")
        write(data, args.out, history)
    print(f"targets: {sum(c.passed is True for c in checks(data))} passed, "
          f"{sum(c.passed is False for c in checks(data))} failed; {args.out / 'PERFORMANCE.md'}")
    if code:
        sys.exit(f"scripts/bench.py: error: a benchmark failed (pytest exit {code}); the report "
                 f"shows what was measured: {args.out / 'PERFORMANCE.md'}")
