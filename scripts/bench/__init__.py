"""The performance benchmark behind `python scripts/bench.py`: step time, roofline share (against
TensorFlow's and NumPy's GEMM peaks), memory, eager baseline, sweep overhead, a real CLI run, time
to quality, coarse to fine against a direct run, fp32/bf16 quality and the optimiser presets.

It lives beside the package, not in it: it needs a checkout (scripts/run.py, docs/). Transfers
are built only through the session, `nst_tf.session` (as every run's are).

- `plan`: what to measure and how long (`FULL`, `QUICK`) and the issue's targets
- `machine`: the machine it runs on (CPU, ISA flags, cores, memory, versions, load)
- `harness`: settings, images, compiled steps and CLI runs, and timing them
- `roofline`: analytic FLOPs and the GEMM peaks (TensorFlow in process, NumPy in a subprocess)
- `sections`: the measurements, one function per section of the report
- `advice`: the targets, met or not and why, and the recommendations
- `batching`: B images in one compiled step, batched sweeps, memory per member, GPU estimate
- `history`: earlier machines' headline figures (docs/performance_history.json)
- `figures`, `report`: the JPEG figures, performance.json and PERFORMANCE.md
- `cli`: the whole run and the command line
"""

from pathlib import Path

HERE = Path(__file__).resolve().parent  # scripts/bench/
ROOT = HERE.parents[1]  # the checkout: conf/, nst_tf/, scripts/, tests/, docs/, outputs/
SCRIPTS = HERE.parent
ENTRY = SCRIPTS / "bench.py"  # also runs the probes that need a fresh process
RUN_SCRIPT = SCRIPTS / "run.py"
DOCS = ROOT / "docs"
HISTORY = DOCS / "performance_history.json"
OUTPUTS = ROOT / "outputs" / "bench"  # each run's report, unless --out docs


def jsonable(value: object) -> object:
    """json.dumps's `default` for what the reports hold besides plain types."""
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
