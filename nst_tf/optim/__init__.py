"""Optimisers that run entirely inside `tf.function` (optionally XLA-compiled).

Both optimisers share one small interface: `step()` does one iteration and returns the values
`fn` reported at the point *before* the update; `reset()` forgets all state so the same object,
and the same compiled function around `step`, can start a new run from a new `x`.
"""

from collections.abc import Callable
from typing import Any, Protocol

import tensorflow as tf

from nst_tf.optim.adam import Adam
from nst_tf.optim.lbfgs import LBFGS

ValuesAndGrad = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
"""`fn(x) -> (values, grad)`.

`values` is a float32 1-D tensor of static length `num_values`: `values[0]` is the objective to
minimise, the rest are extra quantities to log. `grad` is d values[0]/dx, shaped like `x`.
"""

__all__ = ["LBFGS", "Adam", "Optimizer", "ValuesAndGrad", "make_optimizer"]


class Optimizer(Protocol):
    num_evals: tf.Variable
    """int64 count of `fn` evaluations since the last reset."""

    def step(self) -> tf.Tensor:
        """One iteration; returns `values` at x_k, the point before this iteration's update."""
        ...

    def reset(self) -> None:
        """Forget all state; the caller then assigns the new starting point to `x`."""
        ...


def make_optimizer(
    name: str, fn: ValuesAndGrad, x: tf.Variable, num_values: int, **params: Any
) -> Optimizer:
    """Build the optimiser called `name` ("lbfgs" or "adam") with its own `params`."""
    if name == "lbfgs":
        return LBFGS(fn, x, num_values, **params)
    if name == "adam":
        return Adam(fn, x, num_values, **params)
    raise ValueError(f"unknown optimizer {name!r}; expected 'lbfgs' or 'adam'")
