"""The optimisers' settings: one dataclass each, the only home of their defaults, with the
checks types cannot express. Kept apart from the config system, so the core (`nst_tf.optim`)
takes its defaults from here without importing it."""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from nst_tf.errors import UserError


class LineSearch(Enum):
    none = "none"
    strong_wolfe = "strong_wolfe"


class OptimizerConfig:
    """Base of the optimisers' configs: `name` is the optimiser `nst_tf.optim` registers, the
    other fields its keyword arguments; their defaults here are the only ones."""

    def check(self) -> None:
        """Raise UserError for a setting the types allow but the optimiser cannot use."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The optimiser's keyword arguments (enums as their values)."""
        return {
            key: getattr(value, "value", value)
            for key, value in asdict(self).items()
            if key != "name"
        }


def _require(opt: OptimizerConfig, key: str, ok: Callable[[Any], bool], rule: str) -> None:
    value = getattr(opt, key)
    if not ok(value):
        raise UserError(f"optimizer.{key}={value} {rule}")


@dataclass
class LbfgsConfig(OptimizerConfig):
    name: str = "lbfgs"
    # Measured: as good as 100, 11% sooner at 512 px, half the memory (docs/PERFORMANCE.md).
    history_size: int = 50
    line_search: LineSearch = LineSearch.none
    learning_rate: float = 1.0
    max_line_search: int = 25
    tolerance_grad: float = 0.0  # stop early when max|g| <= this; 0 = always run all iterations
    tolerance_change: float = 0.0  # stop early when loss or step change < this; 0 = never
    # No pixel changes by more than this (× learning_rate, pixel units 0..255) in one step;
    # 0 = torch.optim.LBFGS's steps (a tiny first step, then unbounded), whose loss jumps up to
    # 700x early on from the noise start. Measured in docs/LBFGS_FIRST_STEP.md.
    max_step: float = 48.0
    # The bound holds while fewer than this many curvature pairs are stored, then lifts, as the
    # pairs then scale the steps; 0 = always. Measured in docs/LBFGS_FIRST_STEP.md.
    max_step_pairs: int = 10

    def check(self) -> None:
        _require(self, "learning_rate", lambda v: v > 0, "must be > 0")
        _require(self, "history_size", lambda v: v >= 1, "must be >= 1")
        _require(self, "max_line_search", lambda v: v >= 1, "must be >= 1")
        for key in ("tolerance_grad", "tolerance_change"):
            _require(self, key, lambda v: v >= 0, "must be >= 0 (0 = off)")
        _require(self, "max_step", lambda v: v >= 0, "must be >= 0 (0 = unbounded, as torch)")
        _require(self, "max_step_pairs", lambda v: v >= 0, "must be >= 0 (0 = always bounded)")


@dataclass
class AdamConfig(OptimizerConfig):
    name: str = "adam"
    learning_rate: float = 10.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-8

    def check(self) -> None:
        _require(self, "learning_rate", lambda v: v > 0, "must be > 0")
        for key in ("beta_1", "beta_2"):
            _require(self, key, lambda v: 0 <= v < 1, "must be in [0, 1)")
        _require(self, "epsilon", lambda v: v > 0, "must be > 0")


# Every optimiser `optimizer=NAME` can pick: its schema, checks and defaults.
OPTIMIZER_SCHEMAS = {"lbfgs": LbfgsConfig, "adam": AdamConfig}
