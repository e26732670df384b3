"""L-BFGS following torch.optim.LBFGS, running entirely in TensorFlow, for a batch of problems.

One `step()` is one outer iteration of torch's algorithm for every member of the batch (x's
first axis), each with its own history, step length and convergence, held in tf.Variables
created in `__init__`: the two-loop recursion runs on all members at once with batched dot
products. So `tf.function(opt.step)` (also with `jit_compile=True`) traces once, never syncs
with the host, and `reset()` lets the same compiled function start a new run.
"""

from __future__ import annotations

import tensorflow as tf

from nst_tf.optim.line_search import Point, strong_wolfe
from nst_tf.optim.registry import ValuesAndGrad, register

_MIN_CURVATURE = 1e-10  # torch skips (s, y) pairs with y·s at or below this
LINE_SEARCHES = ("none", "strong_wolfe")


LINE_SEARCH_ALONE = ("optimizer.line_search=strong_wolfe runs one image at a time: its trial "
                     "steps differ per image, so a batch would evaluate every image at each "
                     "one's trials")


def _dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """a·b over the last axis: per member for (B, n), a scalar for (n,)."""
    return tf.reduce_sum(a * b, axis=-1)


@register("lbfgs")
class LBFGS:
    """L-BFGS on each member of `x` (torch.optim.LBFGS's algorithm), one outer iteration per
    `step()`. `x` is (B, ...): B independent problems whose `fn` values are (B, num_values) and
    whose gradient is shaped like `x`; a member's course never depends on the others'.

    Differences from calling torch's step with max_iter=1 repeatedly:
    - the accepted point's f, gradient and values are cached, so each step evaluates fn once
      with line_search="none" (at x_k) and a line search's accepted evaluation is reused;
    - `max_step` > 0 bounds a step while fewer than `max_step_pairs` curvature pairs are stored
      (0: always): no element moves by more than learning_rate·max_step (with a line search,
      this bounds its first trial); `max_step` = 0 gives torch's steps;
    - a direction that is not downhill drops the history and restarts from steepest descent
      (with the first step's length) instead of stalling;
    - the stopping tests run at the start of a step, on f and g at x_k: max|g| <= tolerance_grad,
      g·g <= tolerance_change (even steepest descent is flat), and, after a step, max|s| or
      |f change| below tolerance_change. A non-finite loss also stops (setting `converged`)
      without touching the history. Once `converged`, step() returns values at x and leaves it.
    - the line search (one member only) makes at most `max_line_search` evaluations (torch
      allows one more).

    `x` must not be changed between steps except after `reset()`. Memory per member: two
    [history_size, n] buffers plus a handful of n-vectors, for n elements.
    """

    def __init__(
        self,
        fn: ValuesAndGrad,
        x: tf.Variable,
        num_values: int,
        *,
        history_size: int,
        line_search: str,
        learning_rate: float,
        max_line_search: int,
        tolerance_grad: float,
        tolerance_change: float,
        max_step: float,
        max_step_pairs: int,
    ) -> None:
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
        if history_size < 1 or max_line_search < 1 or num_values < 1:
            raise ValueError("history_size, max_line_search and num_values must be at least 1")
        if max_step < 0 or max_step_pairs < 0:
            raise ValueError(f"max_step and max_step_pairs must be >= 0, got {max_step}, "
                             f"{max_step_pairs}")
        if x.dtype != tf.float32:
            raise ValueError(f"x must be float32, got {x.dtype.name}")
        batch = x.shape[0]
        if line_search != "none" and batch != 1:
            raise ValueError(LINE_SEARCH_ALONE)
        self._fn = fn
        self._x = x
        self._num_values = num_values
        self._m = history_size
        self._line_search = line_search
        self._lr = learning_rate
        self._max_evals = max_line_search
        self._tol_grad = tolerance_grad
        self._tol_change = tolerance_change
        self._max_step = max_step
        self._max_step_pairs = max_step_pairs or history_size + 1
        self._batch = batch
        n = x.shape[1:].num_elements()

        def var(initial, name: str) -> tf.Variable:
            return tf.Variable(initial, trainable=False, name=name)

        def each(value, dtype=tf.float32) -> tf.Tensor:
            return tf.fill([batch], tf.constant(value, dtype))

        self.num_evals = var(tf.constant(0, tf.int64), "num_evals")
        self.converged = var(each(False, tf.bool), "converged")
        # Per member, a ring buffer of curvature pairs: s = x_{k+1} - x_k, y = g_{k+1} - g_k,
        # rho = 1 / y·s, member b's in rows b·history_size + [0, history_size). Only its rows
        # [head - count, head) (mod history_size) are meaningful; the others are never read, so
        # reset() need not clear them.
        self._s = var(tf.zeros([batch * history_size, n]), "s")
        self._y = var(tf.zeros([batch * history_size, n]), "y")
        self._rho = var(tf.zeros([batch * history_size]), "rho")
        self._head = var(each(0, tf.int32), "head")  # next row to write
        self._count = var(each(0, tf.int32), "count")
        self._h_diag = var(each(1.0), "h_diag")  # initial inverse-Hessian scale, y·s / y·y
        # The previous iteration, to form the next pair and test for lack of progress.
        self._has_prev = var(each(False, tf.bool), "has_prev")
        self._prev_s = var(tf.zeros([batch, n]), "prev_s")
        self._prev_g = var(tf.zeros([batch, n]), "prev_g")
        self._prev_f = var(each(0.0), "prev_f")
        self._fresh = var(each(True, tf.bool), "fresh")  # torch's first step: no iteration yet
        # fn at the current x, when known.
        self._cache_valid = var(False, "cache_valid")
        self._cache_values = var(tf.zeros([batch, num_values]), "cache_values")
        self._cache_g = var(tf.zeros([batch, n]), "cache_g")

    @staticmethod
    def image_buffers(history_size: int) -> int:
        """The s and y histories (its handful of n-vectors are within the measured step's
        bytes, nst_tf.memory)."""
        return 2 * history_size

    def reset(self) -> None:
        """Forget history, caches and counters; then assign the new starting point to x."""
        self.num_evals.assign(0)
        for variable, value in ((self.converged, False), (self._has_prev, False),
                                (self._fresh, True), (self._head, 0), (self._count, 0),
                                (self._h_diag, 1.0)):
            variable.assign(tf.fill([self._batch], tf.constant(value, variable.dtype)))
        self._cache_valid.assign(False)

    def step(self) -> tf.Tensor:
        """One iteration; returns fn's values at x_k, the point before this step's update."""
        values, g = tf.cond(self._cache_valid, self._cached, self._evaluate_x)
        stop = self.converged | self._should_stop(values[:, 0], g)
        self.converged.assign(stop)
        tf.cond(tf.reduce_all(stop), lambda: None, lambda: self._iterate(values, g, ~stop))
        return values

    # --- evaluations -------------------------------------------------------------------------

    def _evaluate(self, flat_x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        values, grad = self._fn(tf.reshape(flat_x, self._x.shape))
        values = tf.ensure_shape(values, [self._batch, self._num_values])
        return values, tf.reshape(grad, [self._batch, -1])

    def _evaluate_x(self) -> tuple[tf.Tensor, tf.Tensor]:
        values, g = self._evaluate(self._flat_x())
        self.num_evals.assign_add(1)
        self._cache_values.assign(values)
        self._cache_g.assign(g)
        self._cache_valid.assign(True)
        return values, g

    def _cached(self) -> tuple[tf.Tensor, tf.Tensor]:
        return self._cache_values.value(), self._cache_g.value()

    def _flat_x(self) -> tf.Tensor:
        return tf.reshape(self._x, [self._batch, -1])

    # --- one iteration -----------------------------------------------------------------------

    def _should_stop(self, f: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        finite = tf.math.is_finite(f) & tf.reduce_all(tf.math.is_finite(g), axis=1)
        grad_small = tf.reduce_max(tf.abs(g), axis=1) <= self._tol_grad
        flat = _dot(g, g) <= self._tol_change
        no_progress = self._has_prev & (
            (tf.reduce_max(tf.abs(self._prev_s), axis=1) <= self._tol_change)
            | (tf.abs(f - self._prev_f) < self._tol_change)
        )
        return ~finite | grad_small | flat | no_progress

    def _iterate(self, values: tf.Tensor, g: tf.Tensor, moving: tf.Tensor) -> None:
        """One iteration of the members in `moving`; the others keep everything."""
        f = values[:, 0]
        self._remember(g, moving & self._has_prev)
        d = self._direction(g)
        gtd = _dot(g, d)
        # Stale or badly conditioned pairs can give a direction that is not downhill (torch then
        # stalls for good): drop them and restart from steepest descent.
        restart = moving & ~(gtd < -self._tol_change)
        self._count.assign(tf.where(restart, 0, self._count))
        self._h_diag.assign(tf.where(restart, 1.0, self._h_diag))
        d = tf.where(restart[:, None], -g, d)
        gtd = tf.where(restart, -_dot(g, g), gtd)
        fresh = self._fresh | restart
        t = self._step_length(g, d, fresh)
        x0 = self._flat_x()
        if self._line_search == "none":
            self._cache_valid.assign(False)
        else:
            t = self._line_search_one(x0, d, t, values, g, gtd)
        # Same expression as in the line search's trials, so x is bit-for-bit the point the
        # cache describes.
        x1 = tf.where(moving[:, None], x0 + t[:, None] * d, x0)
        self._x.assign(tf.reshape(x1, self._x.shape))
        self._prev_s.assign(tf.where(moving[:, None], t[:, None] * d, self._prev_s))
        self._prev_g.assign(tf.where(moving[:, None], g, self._prev_g))
        self._prev_f.assign(tf.where(moving, f, self._prev_f))
        self._has_prev.assign(self._has_prev | moving)
        self._fresh.assign(self._fresh & ~moving)

    def _line_search_one(self, x0: tf.Tensor, d: tf.Tensor, t: tf.Tensor, values: tf.Tensor,
                         g: tf.Tensor, gtd: tf.Tensor) -> tf.Tensor:
        """The strong-Wolfe line search for a batch of one; returns the accepted step, (1,)."""

        def trial(t: tf.Tensor) -> Point:
            trial_values, trial_g = self._evaluate(x0 + t * d)
            return Point(t, trial_values[0, 0], trial_g[0], _dot(trial_g[0], d[0]),
                          trial_values[0])

        start = Point(tf.constant(0.0), values[0, 0], g[0], gtd[0], values[0])
        accepted, evals = strong_wolfe(trial, start, t[0], d[0], self._max_evals,
                                        self._tol_change)
        self.num_evals.assign_add(tf.cast(evals, tf.int64))
        self._cache_values.assign(accepted.values[None])
        self._cache_g.assign(accepted.g[None])
        return accepted.t[None]

    def _step_length(self, g: tf.Tensor, d: tf.Tensor, fresh: tf.Tensor) -> tf.Tensor:
        """Each member's step length along d: the fixed step, or the line search's first
        trial."""
        if self._max_step > 0:
            # Without curvature pairs d = -g has no natural length. From the noise start the
            # curvature along torch's tiny first step is negative, so its pair is skipped and
            # the next step, -lr·g unscaled, moves pixels by hundreds of units (the loss jumps
            # 30-3000x). Early pairs also underestimate how fast the curvature grows, so the
            # next few steps can overshoot too. A bound in x's units stops both
            # (docs/LBFGS_FIRST_STEP.md); once enough pairs describe the curvature it only
            # slows the run, so it lifts after `max_step_pairs` pairs.
            # A fresh step (no pairs yet) moves exactly that far: where the objective is tiny in
            # x's units (loss_scale=reference, a small α) -lr·g is below float32's resolution
            # at x's values, x never moves, and no curvature pair ever forms.
            ratio = self._max_step / tf.reduce_max(tf.abs(d), axis=1)
            bounded = tf.where(self._count < self._max_step_pairs, tf.minimum(1.0, ratio), 1.0)
            return self._lr * tf.where(fresh, ratio, bounded)
        # torch's: lr·min(1, 1/|g|_1) on the first step after a reset or restart, then lr.
        first_t = tf.minimum(1.0, 1.0 / tf.reduce_sum(tf.abs(g), axis=1)) * self._lr
        return tf.where(fresh, first_t, self._lr)

    def _remember(self, g: tf.Tensor, members: tf.Tensor) -> None:
        """Store each of `members`' pair from the previous iteration, if its curvature is
        positive."""
        s = self._prev_s.value()
        y = g - self._prev_g
        ys = _dot(y, s)
        push = members & (ys > _MIN_CURVATURE)
        # Row updates in place: never materialise another [batch·history_size, n] buffer.
        rows = self._rows(self._head.value())
        for buffer, new in ((self._s, s), (self._y, y), (self._rho, 1.0 / ys)):
            keep = tf.reshape(push, [-1] + [1] * (new.shape.rank - 1))
            buffer.scatter_nd_update(rows[:, None], tf.where(keep, new, tf.gather(buffer, rows)))
        self._head.assign(tf.where(push, (self._head + 1) % self._m, self._head))
        self._count.assign(tf.where(push, tf.minimum(self._count + 1, self._m), self._count))
        self._h_diag.assign(tf.where(push, ys / _dot(y, y), self._h_diag))

    def _rows(self, rows: tf.Tensor) -> tf.Tensor:
        """Where each member's row `rows[b]` is in a buffer. The buffers are only ever read at
        these (a sparse read): row updates put a variable in TensorFlow's copy-on-read mode,
        where a dense read copies all of it, each time."""
        return tf.range(self._batch) * self._m + rows

    def _direction(self, g: tf.Tensor) -> tf.Tensor:
        """-H g by the two-loop recursion over each member's stored pairs (just -h_diag g where
        it has none)."""
        m, count, newest = self._m, self._count.value(), self._head - 1

        def pair(j):  # each member's j-th newest pair, and whether it has one
            rows = self._rows(tf.math.floormod(newest - j, m))
            return (*(tf.gather(buffer, rows) for buffer in (self._s, self._y, self._rho)),
                    j < count)

        def newest_first(j, q, alpha):
            s, y, rho, has = pair(j)
            a = tf.where(has, rho * _dot(s, q), 0.0)
            return j + 1, q - a[:, None] * y, tf.tensor_scatter_nd_update(alpha, [[j]], [a])

        _, q, alpha = tf.while_loop(
            lambda j, *_: j < tf.reduce_max(count), newest_first,
            (0, -g, tf.zeros([m, self._batch])), maximum_iterations=m
        )

        def oldest_first(j, r):
            s, y, rho, has = pair(j)
            b = rho * _dot(y, r)
            return j - 1, r + tf.where(has, tf.gather(alpha, j) - b, 0.0)[:, None] * s

        _, r = tf.while_loop(
            lambda j, _: j >= 0, oldest_first,
            (tf.reduce_max(count) - 1, self._h_diag[:, None] * q), maximum_iterations=m
        )
        return r
