"""What the Hydra drivers (app.py and the batching launcher) say of a job: how the user started
us, for the `resume=` line they can paste; a job's objective, which a sweeper minimises; and one
line for a sweep job that did not end ok. Imports neither driver, so both import it."""

import math
import sys
from pathlib import Path
from typing import Any

from nst_tf.errors import say


def command() -> str:
    """How the user started us, for the `resume=` line they can paste."""
    script = Path(sys.argv[0])
    if script.name == "__main__.py":
        return "python -m nst_tf"
    return f"python {script}" if script.suffix == ".py" else script.name


def objective(cfg: Any, summary: dict[str, Any]) -> float:
    """What a sweeper minimises: the job's final `cfg.objective` loss; nan if it failed."""
    if summary["status"] != "ok":
        return math.nan  # no loss to report; nst_tf.search tells Optuna it was the worst
    return float(summary["final"][cfg.objective])  # the pipeline checked the name


def report_sweep_job(where: Any, overrides: list[str], summary: dict[str, Any]) -> None:
    """One line for a sweep job that did not end ok."""
    if summary["status"] != "ok":
        job = f"job {where.out.name} ({' '.join(overrides)})"
        say(f"{job}: {summary['status']}: {summary['reason']}")
