"""The benchmark behind `python scripts/bench.py`, on pytest-benchmark: its `bench_*.py` modules
are benchmarks (timing rounds after warm-up, the machine described by py-cpuinfo, one JSON per
run, `pytest-benchmark compare` across runs); what is ours is measured beside the timings, in
each benchmark's `extra_info`:

- `bench_step.py`: NumPy's GEMM peak, the step per size and precision (the roofline share), the
  style terms against Gram
- `bench_runs.py`: time to quality against the PyTorch L-BFGS peer, batch throughput and the
  batched sweep, time to the default picture against today's default
- `conftest.py`: the plan and the machine's load for the benchmarks
- `plan`: what to measure and how long (`FULL`, `QUICK`); `harness`: settings, images and
  compiled steps built through `nst_tf.session`, CLI runs
- `checks`: issue 33's targets, pass or fail on the measured ratios; `report`: PERFORMANCE.md
  rendered from the JSON with tabulate; `cli`: the command line

It lives beside the package, not in it: it needs a checkout (scripts/run.py, docs/).
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent  # scripts/bench/
ROOT = HERE.parents[1]  # the checkout
SCRIPTS = HERE.parent
RUN_SCRIPT = SCRIPTS / "run.py"
DOCS = ROOT / "docs"
HISTORY = DOCS / "performance_history.json"
OUTPUTS = ROOT / "outputs" / "bench"  # each run's report, unless --out docs
