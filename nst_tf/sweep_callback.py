"""The end of a multirun: sweep.csv, the figure, and an exit code saying whether every job
succeeded (registered in conf/hydra/callbacks/nst_tf.yaml)."""

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from nst_tf.errors import UserError, WriteError, warn
from nst_tf.sweep import (
    SweepJob,
    read_sweep,
    sweep_exit_code,
    sweep_tally,
    write_sweep_figure,
    write_sweep_table,
)


class SweepEnd(Callback):
    """Writes sweep.csv, figure.png and figure.pdf into the sweep dir, prints how the jobs
    ended, and exits non-zero unless all were ok: a stopped sweep with its signal's code (e.g.
    143), one with failed or diverged jobs with 1."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            jobs = read_sweep(sweep_dir)
        except UserError as error:  # no job ran: nothing to record, and Hydra says why
            _warn(f"no sweep.csv or figure for {sweep_dir}: {error}")
            return
        try:
            table = write_sweep_table(sweep_dir, jobs)
        except WriteError as error:
            table = None
            _warn(f"cannot write {error.path} ({error.reason}); "
                  "choose a writable sweep dir with hydra.sweep.dir=...")
        _write_figure(sweep_dir, jobs)
        print(f"sweep: {sweep_tally(jobs)}" + (f"; see {table}" if table else ""))
        if code := sweep_exit_code(jobs):
            sys.exit(code)  # Hydra lets SystemExit through: the multirun's own exit code


def _write_figure(sweep_dir: Path, jobs: list[SweepJob]) -> None:
    try:
        paths = write_sweep_figure(sweep_dir, jobs=jobs)
    except Exception as error:  # a figure must never fail a finished sweep
        message = " ".join(str(error).split()) or type(error).__name__
        _warn(f"no figure for {sweep_dir}: {message}; "
              f"retry with: python scripts/make_figure.py {sweep_dir}")
        return
    print(f"figure: {paths[0]} and {paths[1].name}")


def _warn(message: str) -> None:
    warn(message)
