"""The optimiser interface and the registry `make_optimizer` looks names up in.

Kept apart from `nst_tf.optim` so the optimiser modules can register themselves while that
package imports them.
"""

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import tensorflow as tf

ValuesAndGrad = Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]]
"""`fn(x) -> (values, grad)`.

`x` is (B, ...): B independent problems. `values` is a float32 (B, num_values) tensor:
`values[:, 0]` is each problem's objective, the rest are extra quantities to log. `grad` is
d Σ values[:, 0] / dx, shaped like `x`: each problem's own gradient.
"""


class Optimizer(Protocol):
    num_evals: tf.Variable
    """int64 count of `fn` evaluations since the last reset."""

    def step(self) -> tf.Tensor:
        """One iteration; returns `values` at x_k, the point before this iteration's update."""
        ...

    def reset(self) -> None:
        """Forget all state; the caller then assigns the new starting point to `x`."""
        ...


class OptimizerClass(Protocol):
    """An optimiser's class: `cls(fn, x, num_values, **params)`, every parameter keyword-only
    and required, makes one."""

    def __call__(self, fn: ValuesAndGrad, x: tf.Variable, num_values: int,
                 **params: Any) -> Optimizer: ...

    def image_buffers(self, history_size: int) -> int:
        """How many image-sized float32 buffers one keeps per image of a batch, given
        optimizer.history_size (0 where it has none): what the memory check counts
        (nst_tf.memory), before anything is built."""
        ...


OPTIMIZERS: dict[str, OptimizerClass] = {}

C = TypeVar("C", bound=OptimizerClass)


def register(name: str) -> Callable[[C], C]:
    """Class decorator: `make_optimizer(name, ...)` builds this class."""

    def add(cls: C) -> C:
        if name in OPTIMIZERS:
            raise ValueError(f"optimizer {name!r} is already registered ({OPTIMIZERS[name]})")
        if not callable(getattr(cls, "image_buffers", None)):
            raise TypeError(f"optimizer {name!r} declares no image_buffers(history_size): how "
                            "many image-sized buffers it keeps, which the memory check counts")
        OPTIMIZERS[name] = cls
        return cls

    return add

