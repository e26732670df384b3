"""Optimisers that run entirely inside `tf.function` (optionally XLA-compiled).

They share one small interface (`registry.Optimizer`) over a batch: `x` is (B, ...), B
independent problems, and `step()` does one iteration of each and returns the (B, values) `fn`
reported at the points *before* the update; `reset()` forgets all state so the
same object, and the same compiled function around `step`, can start a new run from a new `x`.
`step()` is traced with autograph off (nst_tf.transfer): control flow on tensors is `tf.cond`
and `tf.while_loop`, as L-BFGS's.

Adding an optimiser: its class, taking `(fn, x, num_values, *, <its parameters>)` with no
defaults and declaring `image_buffers(history_size)` (what the memory check counts), decorated
with `@register("name")` and imported here (or by a plug-in, nst_tf.plugins); its config
dataclass (defaults and `check()`) in `nst_tf.optimizer_config.OPTIMIZER_SCHEMAS`; and, in the
package, `conf/optimizer/name.yaml`.
"""

from typing import Any

import tensorflow as tf

from nst_tf.optim.adam import Adam
from nst_tf.optim.lbfgs import LBFGS
from nst_tf.optim.registry import OPTIMIZERS, Optimizer, ValuesAndGrad, register
from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS

__all__ = [
    "LBFGS",
    "OPTIMIZERS",
    "Adam",
    "Optimizer",
    "ValuesAndGrad",
    "make_optimizer",
    "register",
]


def make_optimizer(
    name: str, fn: ValuesAndGrad, x: tf.Variable, num_values: int, **params: Any
) -> Optimizer:
    """Build the optimiser registered as `name` with `params`; those not given take the defaults
    of its config dataclass (an optimiser registered without one needs them all)."""
    if name not in OPTIMIZERS:
        known = ", ".join(repr(n) for n in sorted(OPTIMIZERS))
        raise ValueError(f"unknown optimizer {name!r}; expected one of {known}")
    schema = OPTIMIZER_SCHEMAS.get(name)
    defaults = schema().params() if schema else {}
    return OPTIMIZERS[name](fn, x, num_values, **{**defaults, **params})
