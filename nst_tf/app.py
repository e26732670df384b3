"""The Hydra entry: composes the config, hands each run to the pipeline, and reports.

TensorFlow loads only when a run starts (nst_tf.pipeline), so --help and --cfg stay quick.
"""

import logging
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from nst_tf.config import CONF_PACKAGE
from nst_tf.errors import (
    Stopped,
    StopRequest,
    UserError,
    driver_stop,
    fail,
    handling_signals,
    pause_point,
    say,
)
from nst_tf.hydra_jobs import command, objective, report_sweep_job
from nst_tf.hydra_setup import config_error_message, register_configs
from nst_tf.plugins import load_plugins

log = logging.getLogger("nst_tf")


def _dir_key() -> str:
    """The setting that chooses this job's dir."""
    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    return "hydra.sweep.dir" if multirun else "hydra.run.dir"


@hydra.main(config_path=f"pkg://{CONF_PACKAGE}", config_name="config", version_base=None)
def _hydra_main(cfg: DictConfig) -> float:
    """One run or sweep job; returns its objective (a sweeper minimises it), nan if it failed."""
    pause_point("import")
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)
    from nst_tf import compose, pipeline

    load_plugins()  # again in a launcher's worker of its own process, where main() did not run
    hydra_cfg = HydraConfig.get()
    sweep = hydra_cfg.mode == RunMode.MULTIRUN
    where = pipeline.Where(Path(hydra_cfg.runtime.output_dir), _dir_key(), command(),
                           keep_failures=sweep)
    overrides = list(hydra_cfg.overrides.task)
    if sweep:
        return objective(cfg, _sweep_job(cfg, where, overrides))
    with driver_stop() as stop:
        summary = compose.attempt(cfg, where, overrides, stop)
    if summary["status"] == "interrupted":
        say(summary["reason"])
    elif summary["status"] != "ok":
        say(f"error: {summary['reason']}", logging.ERROR)
    if summary["status"] != "ok":
        sys.exit(summary["exit_code"])
    return objective(cfg, summary)


_sweep_stopped: dict[str, Any] = {}  # the record of the job a stop signal ended, if any


def _sweep_job(cfg: DictConfig, where: Any, overrides: list[str]) -> dict[str, Any]:
    """One job of a sweep: it never ends the sweep, except that a stop signal skips the rest."""
    from nst_tf import compose, pipeline

    job = f"job {where.out.name} ({' '.join(overrides)})"
    if _sweep_stopped:
        summary = {"status": "skipped", "exit_code": _sweep_stopped["exit_code"],
                   "reason": "not run: the sweep was stopped", "overrides": overrides}
        pipeline.write_record(where.out, summary)
    else:
        try:
            with driver_stop() as stop:
                summary = compose.attempt(cfg, where, overrides, stop)
        except Exception as error:  # a bug in one job must not cost the others
            log.exception("%s failed", job)
            summary = {"status": "failed", "exit_code": 1, "overrides": overrides,
                       "reason": f"{type(error).__name__}: {error}".splitlines()[0]}
            pipeline.write_record(where.out, summary)
        if summary["status"] == "interrupted":
            _sweep_stopped.update(summary)
    report_sweep_job(where, overrides, summary)
    return summary


class SlurmCheck(Callback):
    """Before a sweep under Hydra's Slurm launcher: without Slurm's commands here, one line instead
    of submitit's traceback, and before Hydra writes the sweep dir."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        launcher = str(config.hydra.launcher.get("_target_", ""))
        if launcher.endswith(".SlurmLauncher") and not all(map(shutil.which, ("sbatch", "srun"))):
            # Hydra turns a callback's exceptions into warnings; exit instead.
            fail("Slurm was not found (no sbatch or srun on this machine); "
                 "hydra/launcher=submitit_local runs the same sweep here")


def main() -> None:
    """Console entry: run Hydra, and turn users' mistakes into one line and exit code 2."""
    # Let errors reach us instead of Hydra's multi-line report.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    multirun = "-m" in sys.argv or "--multirun" in sys.argv
    try:
        # From the start, a stop signal ends us with a true line (before TensorFlow loads, too).
        with handling_signals(StopRequest()):
            register_configs()
            _hydra_main()
    except (HydraException, OmegaConfBaseException) as error:
        fail(config_error_message(error))
    except UserError as error:
        fail(str(error))
    except OSError as error:
        if error.filename is None:
            raise
        fail(f"cannot write {error.filename} ({error.strerror}); choose a writable dir with "
             f"{'hydra.sweep.dir' if multirun else 'hydra.run.dir'}=...")
    except Stopped as stop:
        name = signal.Signals(stop.signum).name
        say(f"stopped by {name} between jobs; the jobs that ended are saved in their dirs, "
            "sweep.csv is not: python scripts/make_figure.py SWEEP_DIR writes the figure"
            if multirun else f"stopped by {name} before the first step; nothing was saved")
        sys.exit(stop.exit_code)
