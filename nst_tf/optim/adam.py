"""Adam with the optimiser interface of `nst_tf.optim`: a thin wrapper around Keras's Adam."""

from __future__ import annotations

import keras
import tensorflow as tf

from nst_tf.optim.registry import ValuesAndGrad, register


@register("adam")
class Adam:
    """`keras.optimizers.Adam` on `x`, one `fn` evaluation per step."""

    def __init__(
        self,
        fn: ValuesAndGrad,
        x: tf.Variable,
        num_values: int,
        *,
        learning_rate: float,
        beta_1: float,
        beta_2: float,
        epsilon: float,
    ) -> None:
        self._fn = fn
        self._x = x
        self._num_values = num_values
        self._learning_rate = learning_rate
        self._opt = keras.optimizers.Adam(
            learning_rate=learning_rate, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon
        )
        # Create the moments now: variables cannot be created inside a compiled step.
        self._opt.build([x])
        self.num_evals = tf.Variable(tf.constant(0, tf.int64), trainable=False, name="num_evals")

    @staticmethod
    def image_buffers(history_size: int) -> int:
        """The two moments."""
        return 2

    def step(self) -> tf.Tensor:
        """One Adam update (elementwise: each member of a batch its own); returns `values` at x
        before the update."""
        values, grad = self._fn(tf.convert_to_tensor(self._x))
        self._opt.apply_gradients([(grad, self._x)])
        self.num_evals.assign_add(1)
        return tf.ensure_shape(values, [self._x.shape[0], self._num_values])

    def reset(self) -> None:
        """Zero the moments, the iteration counter and `num_evals`."""
        for v in self._opt.variables:
            v.assign(tf.zeros(v.shape, v.dtype))
        # The learning rate is one of the optimiser's variables too; put it back.
        self._opt.learning_rate = self._learning_rate
        self.num_evals.assign(0)
