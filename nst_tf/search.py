"""Hyperparameter search with Hydra's Optuna sweeper (conf/search/): search spaces that depend
on an earlier choice, and a failed trial's value."""

import math
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

# Ranges for conf/search/optimizer.yaml: L-BFGS keeps 5 to 100 pairs (memory grows with them,
# docs/PERFORMANCE.md); Adam's steps are in pixel values 0-255.
LBFGS_HISTORY = (5, 100)
ADAM_LEARNING_RATE = (0.5, 50.0)


def optimizer_settings(cfg: DictConfig, trial: Any) -> None:
    """L-BFGS's history size or Adam's learning rate, whichever the trial's optimizer is
    (`hydra.sweeper.custom_search_space`: called once the trial's other parameters are
    sampled; Hydra's override grammar cannot make one parameter depend on another)."""
    optimizer = trial.params.get("optimizer", trial.user_attrs.get("optimizer"))
    if optimizer is None:  # not sampled nor overridden: the config's own choice
        optimizer = cfg.hydra.runtime.choices.optimizer
    if optimizer == "lbfgs":
        trial.suggest_int("optimizer.history_size", *LBFGS_HISTORY, log=True)
    elif optimizer == "adam":
        trial.suggest_float("optimizer.learning_rate", *ADAM_LEARNING_RATE, log=True)


class WorstForFailures(Callback):
    """Hands the sweeper a failed, diverged or stopped job's nan as the worst value (registered
    in conf/hydra/callbacks/nst_tf.yaml): with optuna 2, all the Optuna sweeper allows, a nan
    ends the whole search with an error. Hydra's grid sweeper ignores the values."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        value = job_return.return_value if job_return.status == JobStatus.COMPLETED else None
        if isinstance(value, float) and math.isnan(value):
            direction = OmegaConf.select(config, "hydra.sweeper.direction", default="minimize")
            maximize = str(direction).endswith("maximize")
            job_return.return_value = -math.inf if maximize else math.inf
