"""`hydra/launcher=nst_batched`: a sweep's jobs that can share a compiled step run as one batch.

Hydra's own `run_job` gives each job its dir, `.hydra/`, log file and callbacks, with the task
only recording the job; nst_tf.pipeline then runs the recorded jobs in batches, and each job's
return value (its objective) reaches the sweeper and the `on_job_end` callbacks afterwards. Kept
free of TensorFlow imports: Hydra imports every plugin at start-up.
"""

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import (
    JobReturn,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from nst_tf.hydra_jobs import command, objective, report_sweep_job

log = logging.getLogger("nst_tf")


class _Deferred:
    """Hydra's callbacks, with `on_job_end` held back until the job has really run."""

    def __init__(self, callbacks: Any) -> None:
        self.callbacks, self.ended = callbacks, []

    def on_job_start(self, **kwargs: Any) -> None:
        self.callbacks.on_job_start(**kwargs)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.ended.append(config)


# Hydra's default job_logging format: the lines a plain sweep's jobs print.
JOB_FORMAT = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")


@contextmanager
def _logging_to(files: Sequence[str]) -> Iterator[None]:
    """Log as a plain sweep's jobs do while their batches run: into every job's log file (each
    gets the whole sweep's), and on the console in the jobs' format, not the launcher's."""
    handlers = [logging.FileHandler(name) for name in dict.fromkeys(files)]
    root = logging.getLogger()
    consoles = [(h, h.formatter) for h in root.handlers if type(h) is logging.StreamHandler]
    for handler, _ in consoles:
        handler.setFormatter(JOB_FORMAT)
    for handler in handlers:
        handler.setFormatter(JOB_FORMAT)
        root.addHandler(handler)
    try:
        yield
    finally:
        for handler in handlers:
            root.removeHandler(handler)
            handler.close()
        for handler, formatter in consoles:
            handler.setFormatter(formatter)


class BatchedLauncher(Launcher):
    """Runs a sweep's jobs in this process, up to `batch_size` at once ("auto": as many as a
    probe of the step found fastest here and the memory check allows, at most 16) where they
    share shapes, layers, backbone, precision, optimiser settings and iterations."""

    def __init__(self, batch_size: int | str = "auto") -> None:
        if batch_size != "auto" and (not str(batch_size).isdigit() or int(batch_size) < 1):
            from nst_tf.errors import fail

            fail(f"hydra.launcher.batch_size={batch_size} must be auto or a whole number >= 1")
        self.batch_size = batch_size
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction,
              config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
               ) -> Sequence[JobReturn]:
        # First, as the app's task imports it: TensorFlow loads with the plain sweep's settings
        # and its start-up noise filtered (it printed seven lines of it here before).
        import nst_tf._tensorflow  # noqa: F401, I001
        from nst_tf import pipeline
        from nst_tf.compose import job as make_job
        from nst_tf.errors import driver_stop
        from nst_tf.jobs import Job

        assert self.config is not None and self.hydra_context is not None
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        deferred = _Deferred(self.hydra_context.callbacks)
        context = HydraContext(self.hydra_context.config_loader, deferred)
        jobs: list[Job] = []
        files: list[str] = []

        def record(cfg: DictConfig) -> None:
            runtime = HydraConfig.get()
            where = pipeline.Where(Path(runtime.runtime.output_dir), "hydra.sweep.dir",
                                   command(), keep_failures=True)
            jobs.append(make_job(cfg, where, runtime.overrides.task))
            # The job's log file, as Hydra has just set it up: the batch writes to each.
            files.extend(handler.baseFilename for handler in logging.getLogger().handlers
                         if isinstance(handler, logging.FileHandler))

        returns = []
        log.info("Launching %d jobs, in batches of up to %s", len(job_overrides), self.batch_size)
        for number, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info("\t#%d : %s", number, " ".join(filter_overrides(overrides)))
            config = context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(config):
                config.hydra.job.id = config.hydra.job.num = number
            returns.append(run_job(hydra_context=context, task_function=record, config=config,
                                   job_dir_key="hydra.sweep.dir",
                                   job_subdir_key="hydra.sweep.subdir"))
            # run_job leaves the job's logging set up; back to the launcher's, as Hydra's does.
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        # A job Hydra could not set up (its dir, a callback) was never recorded.
        recorded = [ret for ret in returns if ret.status == JobStatus.COMPLETED]
        with _logging_to(files):
            with driver_stop() as stop:
                summaries = pipeline.attempt_jobs(jobs, self.batch_size, keep_going=True,
                                                   stop=stop)
        ran = {id(ret): (job, summary)
               for ret, job, summary in zip(recorded, jobs, summaries, strict=True)}
        for ret, config in zip(returns, deferred.ended, strict=True):
            if id(ret) in ran:
                job, summary = ran[id(ret)]
                report_sweep_job(job.where, job.overrides, summary)
                ret.return_value = objective(config, summary)
            self.hydra_context.callbacks.on_job_end(config=config, job_return=ret)
        return returns
