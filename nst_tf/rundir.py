"""Run dirs: a run writes only into a dir no earlier run has written, and keeps its own record
of its settings there, which resume reads (Hydra's .hydra/ files are rewritten by every launch)."""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from nst_tf.errors import UserError, fail
from nst_tf.files import write_atomic

SETTINGS = "settings.yaml"
# What a run writes; any of these in a dir means an earlier run owns it.
RUN_FILES = (SETTINGS, "result.png", "losses.csv", "summary.json", "snapshots", "loss_curve.png")
# What a sweep writes at its top, beside its jobs' dirs.
SWEEP_FILES = ("multirun.yaml", "sweep.csv", "figure.png", "figure.pdf")


def earlier_run_files(folder: Path) -> list[str]:
    """The files of an earlier run in `folder` (a crashed one's too), by name."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def check_run_dir(folder: Path, key: str = "hydra.run.dir") -> None:
    """Refuse a dir an earlier run has written; `key` is the setting that chooses another."""
    found = earlier_run_files(folder)
    if found:
        raise UserError(
            f"output dir {folder} already holds an earlier run ({', '.join(found)}); continue "
            f"it with resume={folder}, or choose a new dir with {key}=..."
        )


def check_sweep_dir(folder: Path) -> None:
    """Refuse a sweep dir an earlier sweep has written (its record or any job's files)."""
    found = [name for name in SWEEP_FILES if (folder / name).exists()]
    if folder.is_dir():
        found += sorted(f"{job.name}/" for job in folder.iterdir()
                        if job.is_dir() and (earlier_run_files(job) or (job / ".hydra").is_dir()))
    if found:
        raise UserError(
            f"sweep dir {folder} already holds an earlier sweep ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}); choose a new dir with hydra.sweep.dir=..."
        )


def write_settings(folder: Path, cfg: DictConfig) -> None:
    """The run's own record of its settings, written whole or not at all."""
    write_atomic(folder / SETTINGS, OmegaConf.to_yaml(cfg).encode())


def read_settings(folder: Path) -> DictConfig:
    path = folder / SETTINGS
    if not path.is_file():
        raise UserError(f"resume: {folder} has no {SETTINGS}; give the run dir of an nst-tf run")
    try:
        settings = OmegaConf.load(path)
    except Exception as error:  # YAML's and OmegaConf's errors have no common base
        raise UserError(f"resume: {path} is damaged ({type(error).__name__}); "
                        "give the run dir of an intact nst-tf run") from error
    if not isinstance(settings, DictConfig):
        raise UserError(f"resume: {path} is damaged (not a mapping); "
                        "give the run dir of an intact nst-tf run")
    return settings


class RunDirGuard(Callback):
    """Refuses a run or sweep dir an earlier one has written before Hydra writes a byte in it
    (Hydra saves .hydra/ and multirun.yaml before the task starts)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(lambda: check_run_dir(Path(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(lambda: check_sweep_dir(Path(config.hydra.sweep.dir)))

    @staticmethod
    def _check(check: Any) -> None:
        try:
            check()
        except UserError as error:
            fail(str(error))  # Hydra turns a callback's exceptions into warnings; exit instead
