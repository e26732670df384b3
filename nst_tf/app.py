"""The Hydra entry: composes the config, hands each run to the pipeline, and reports.

TensorFlow loads only when a run starts (nst_tf.pipeline), so --help and --cfg stay quick.
"""

import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from nst_tf.config import CONF_PACKAGE, config_error_message, register_configs
from nst_tf.errors import UserError, fail, say

log = logging.getLogger("nst_tf")


def _dir_key() -> str:
    """The setting that chooses this job's dir."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return "hydra.sweep.dir" if multirun else "hydra.run.dir"


def _command() -> str:
    script = Path(sys.argv[0])
    if script.name == "__main__.py":
        return "python -m nst_tf"
    return f"python {script}" if script.suffix == ".py" else script.name


@hydra.main(config_path=f"pkg://{CONF_PACKAGE}", config_name="config", version_base=None)
def _hydra_main(cfg: DictConfig) -> float:
    """One run or sweep job; returns its objective (a sweeper minimises it), nan if it failed."""
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
    from nst_tf import pipeline

    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    where = pipeline.Where(Path(hydra_cfg.runtime.output_dir), _dir_key(), _command(),
                           keep_failures=sweep)
    overrides = list(hydra_cfg.overrides.task)
    if sweep:
        return _objective(cfg, _sweep_job(cfg, where, overrides))
    summary = pipeline.attempt(cfg, where, overrides)
    if summary["status"] == "interrupted":
        say(summary["reason"])
    elif summary["status"] != "ok":
        say(f"error: {summary['reason']}", logging.ERROR)
    if summary["status"] != "ok":
        sys.exit(summary["exit_code"])
    return _objective(cfg, summary)


def _objective(cfg: DictConfig, summary: dict[str, Any]) -> float:
    if summary["status"] != "ok":
        return math.nan  # no loss to report; nst_tf.search tells Optuna it was the worst
    return float(summary["final"][cfg.objective])  # the pipeline checked the name


_sweep_stopped: dict[str, Any] = {}  # the record of the job a stop signal ended, if any


def _sweep_job(cfg: DictConfig, where: Any, overrides: list[str]) -> dict[str, Any]:
    """One job of a sweep: it never ends the sweep, except that a stop signal skips the rest."""
    from nst_tf import pipeline

    job = f"job {where.out.name} ({' '.join(overrides)})"
    if _sweep_stopped:
        summary = {"status": "skipped", "exit_code": _sweep_stopped["exit_code"],
                   "reason": "not run: the sweep was stopped", "overrides": overrides}
        pipeline.write_record(where.out, summary)
    else:
        try:
            summary = pipeline.attempt(cfg, where, overrides)
        except Exception as error:  # a bug in one job must not cost the others
            log.exception("%s failed", job)
            summary = {"status": "failed", "exit_code": 1, "overrides": overrides,
                       "reason": f"{type(error).__name__}: {error}".splitlines()[0]}
            pipeline.write_record(where.out, summary)
        if summary["status"] == "interrupted":
            _sweep_stopped.update(summary)
    if summary["status"] != "ok":
        say(f"{job}: {summary['status']}: {summary['reason']}")
    return summary


def main() -> None:
    """Console entry: run Hydra, and turn users' mistakes into one line and exit code 2."""
    # Let errors reach us instead of Hydra's multi-line report.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    register_configs()
    try:
        _hydra_main()
    except (HydraException, OmegaConfBaseException) as error:
        fail(config_error_message(error))
    except UserError as error:
        fail(str(error))
    except OSError as error:
        if error.filename is None:
            raise
        multirun = "-m" in sys.argv or "--multirun" in sys.argv
        fail(f"cannot write {error.filename} ({error.strerror}); choose a writable dir with "
             f"{'hydra.sweep.dir' if multirun else 'hydra.run.dir'}=...")
    except KeyboardInterrupt:
        say("interrupted before the first step; nothing was saved")
        sys.exit(130)
