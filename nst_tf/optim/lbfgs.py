"""L-BFGS following torch.optim.LBFGS, running entirely in TensorFlow.

One `step()` is one outer iteration of torch's algorithm, with everything torch keeps between
iterations held in tf.Variables created in `__init__`. So `tf.function(opt.step)` (also with
`jit_compile=True`) traces once, never syncs with the host, and `reset()` lets the same compiled
function start a new run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

from nst_tf.optim.registry import ValuesAndGrad, register

_MIN_CURVATURE = 1e-10  # torch skips (s, y) pairs with y·s at or below this
_C1, _C2 = 1e-4, 0.9  # strong-Wolfe constants (sufficient decrease, curvature), as torch
_BRACKET, _ZOOM, _DONE = 0, 1, 2  # line-search phases
LINE_SEARCHES = ("none", "strong_wolfe")


def _dot(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    return tf.reduce_sum(a * b)


class _Point(NamedTuple):
    """One evaluation of fn along the search direction d."""

    t: tf.Tensor  # step length
    f: tf.Tensor  # objective
    g: tf.Tensor  # flat gradient
    gtd: tf.Tensor  # directional derivative g·d
    values: tf.Tensor  # everything fn returned, so an accepted point is never re-evaluated


def _select(pred: tf.Tensor, a: _Point, b: _Point) -> _Point:
    return tf.nest.map_structure(lambda u, v: tf.where(pred, u, v), a, b)


def _cubic_min(a: _Point, b: _Point, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
    """Minimiser of the cubic through a and b (values and slopes), clipped to [lo, hi].

    torch's `_cubic_interpolate`. Falls back to the middle of [lo, hi] when the cubic has no
    minimum or the arithmetic breaks down (an infinite f from a non-finite trial gives NaN).
    """
    d1 = a.gtd + b.gtd - 3 * (a.f - b.f) / (a.t - b.t)
    d2_square = d1 * d1 - a.gtd * b.gtd
    d2 = tf.sqrt(tf.maximum(d2_square, 0.0))
    # torch writes the formula from the right-hand point, whichever order the points come in.
    swap = a.t > b.t
    left_t, left_g = tf.where(swap, b.t, a.t), tf.where(swap, b.gtd, a.gtd)
    right_t, right_g = tf.where(swap, a.t, b.t), tf.where(swap, a.gtd, b.gtd)
    min_pos = right_t - (right_t - left_t) * ((right_g + d2 - d1) / (right_g - left_g + 2 * d2))
    ok = (d2_square >= 0) & tf.math.is_finite(min_pos)
    return tf.where(ok, tf.minimum(tf.maximum(min_pos, lo), hi), (lo + hi) / 2)


def _strong_wolfe(
    evaluate: Callable[[tf.Tensor], _Point],
    start: _Point,
    t: tf.Tensor,
    d: tf.Tensor,
    max_evals: int,
    tolerance_change: float,
) -> tuple[_Point, tf.Tensor]:
    """Strong-Wolfe line search along d from `start` (t = 0), first trying step length t.

    torch's `_strong_wolfe`: bracket a step satisfying the conditions by extrapolation, then zoom
    in by cubic interpolation. Both phases share one tf.while_loop so `evaluate` (a full forward
    and backward pass) appears once in the graph. Returns the accepted point (`start` itself if
    nothing lower was found) and the number of evaluations, at most `max_evals`.
    """
    d_norm = tf.reduce_max(tf.abs(d))

    def sufficient_decrease(p: _Point) -> tf.Tensor:  # Armijo
        return p.f <= start.f + _C1 * p.t * start.gtd

    def curvature(p: _Point) -> tf.Tensor:
        return tf.abs(p.gtd) <= -_C2 * start.gtd

    def order(a: _Point, b: _Point) -> tuple[_Point, _Point]:
        """(lower, higher) by objective; a ties low."""
        a_low = a.f <= b.f
        return _select(a_low, a, b), _select(a_low, b, a)

    # While bracketing, `low` holds the previous trial and `high` is unused.
    def bracket_update(evals, low, high, new):
        too_far = ~sufficient_decrease(new) | ((evals > 2) & (new.f >= low.f))
        found = ~too_far & curvature(new)
        bracketed = too_far | (~found & (new.gtd >= 0))
        # Out of evaluations: accept the newest trial, which satisfies sufficient decrease (torch
        # takes the better of it and t = 0, which is the same thing).
        exhausted = ~(found | bracketed) & (evals >= max_evals)
        bracket_low, bracket_high = order(low, new)
        next_low = _select(bracketed, bracket_low, new)
        next_high = _select(bracketed, bracket_high, high)
        phase = tf.where(found | exhausted, _DONE, tf.where(bracketed, _ZOOM, _BRACKET))
        # Still bracketing: extrapolate past the newest trial.
        t_next = _cubic_min(low, new, new.t + 0.01 * (new.t - low.t), 10 * new.t)
        return phase, t_next, next_low, next_high

    def zoom_update(evals, low, high, new):
        shrink = ~sufficient_decrease(new) | (new.f >= low.f)
        wolfe = ~shrink & curvature(new)
        # The new low's slope points away from the old high: the old low becomes the high end.
        flip = ~shrink & ~wolfe & (new.gtd * (high.t - low.t) >= 0)
        shrunk_low, shrunk_high = order(low, new)
        next_low = _select(shrink, shrunk_low, new)
        next_high = _select(shrink, shrunk_high, _select(flip, low, high))
        return tf.where(wolfe, _DONE, _ZOOM), new.t, next_low, next_high

    def zoom_trial(low, high, insufficient):
        lo, hi = tf.minimum(low.t, high.t), tf.maximum(low.t, high.t)
        t = _cubic_min(low, high, lo, hi)
        eps = 0.1 * (hi - lo)
        near_end = tf.minimum(hi - t, t - lo) < eps
        # Twice in a row near an end of the bracket (or on it): step 10% of its length inside,
        # so the bracket keeps shrinking.
        move = near_end & (insufficient | (t >= hi) | (t <= lo))
        inside = tf.where(tf.abs(t - hi) < tf.abs(t - lo), hi - eps, lo + eps)
        return tf.where(move, inside, t), near_end & ~move

    def body(phase, evals, t, insufficient, low, high):
        new = evaluate(t)
        # A non-finite trial counts as infinitely high: it fails the Armijo test and sends the
        # interpolation to bisection, so it is never accepted and never reaches the history.
        bad = ~(tf.math.is_finite(new.f) & tf.math.is_finite(new.gtd))
        new = new._replace(f=tf.where(bad, float("inf"), new.f), gtd=tf.where(bad, 0.0, new.gtd))
        evals += 1
        phase, t, low, high = tf.cond(
            tf.equal(phase, _BRACKET),
            lambda: bracket_update(evals, low, high, new),
            lambda: zoom_update(evals, low, high, new),
        )
        tiny = tf.abs(high.t - low.t) * d_norm < tolerance_change
        phase = tf.where(tf.equal(phase, _ZOOM) & (tiny | (evals >= max_evals)), _DONE, phase)
        zoom_t, zoom_insufficient = zoom_trial(low, high, insufficient)
        zooming = tf.equal(phase, _ZOOM)
        t = tf.where(zooming, zoom_t, t)
        insufficient = tf.where(zooming, zoom_insufficient, insufficient)
        return phase, evals, t, insufficient, low, high

    init = (tf.constant(_BRACKET), tf.constant(0), t, tf.constant(False), start, start)
    _, evals, _, _, accepted, _ = tf.while_loop(
        lambda phase, *_: tf.not_equal(phase, _DONE), body, init, maximum_iterations=max_evals
    )
    return accepted, evals


@register("lbfgs")
class LBFGS:
    """L-BFGS on `x` (torch.optim.LBFGS's algorithm), one outer iteration per `step()`.

    Differences from calling torch's step with max_iter=1 repeatedly:
    - the accepted point's f, gradient and values are cached, so each step evaluates fn once
      with line_search="none" (at x_k) and a line search's accepted evaluation is reused;
    - `max_step` > 0 bounds every step: no element of x moves by more than
      learning_rate·max_step (with a line search, this bounds its first trial); `max_step` = 0
      gives torch's steps;
    - a direction that is not downhill drops the history and restarts from steepest descent
      (with the first step's length) instead of stalling;
    - the stopping tests run at the start of a step, on f and g at x_k: max|g| <= tolerance_grad,
      g·g <= tolerance_change (even steepest descent is flat), and, after a step, max|s| or
      |f change| below tolerance_change. A non-finite loss also stops (setting `converged`)
      without touching the history. Once `converged`, step() returns values at x and leaves it.
    - the line search makes at most `max_line_search` evaluations (torch allows one more).

    `x` must not be changed between steps except after `reset()`. Memory: two
    [history_size, n] buffers plus a handful of n-vectors, for n elements in x.
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
    ) -> None:
        if line_search not in LINE_SEARCHES:
            raise ValueError(f"line_search must be one of {LINE_SEARCHES}, got {line_search!r}")
        if history_size < 1 or max_line_search < 1 or num_values < 1:
            raise ValueError("history_size, max_line_search and num_values must be at least 1")
        if max_step < 0:
            raise ValueError(f"max_step must be >= 0 (0 = unbounded), got {max_step}")
        if x.dtype != tf.float32:
            raise ValueError(f"x must be float32, got {x.dtype.name}")
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
        n = x.shape.num_elements()

        def var(initial, name: str) -> tf.Variable:
            return tf.Variable(initial, trainable=False, name=name)

        self.num_evals = var(tf.constant(0, tf.int64), "num_evals")
        self.converged = var(False, "converged")
        # Ring buffer of curvature pairs: s = x_{k+1} - x_k, y = g_{k+1} - g_k, rho = 1 / y·s.
        # Only rows [head - count, head) (mod history_size) are meaningful; the others are never
        # read, so reset() need not clear them.
        self._s = var(tf.zeros([history_size, n]), "s")
        self._y = var(tf.zeros([history_size, n]), "y")
        self._rho = var(tf.zeros([history_size]), "rho")
        self._head = var(0, "head")  # next row to write
        self._count = var(0, "count")
        self._h_diag = var(1.0, "h_diag")  # initial inverse-Hessian scale, y·s / y·y
        # The previous iteration, to form the next pair and test for lack of progress.
        self._has_prev = var(False, "has_prev")
        self._prev_s = var(tf.zeros([n]), "prev_s")
        self._prev_g = var(tf.zeros([n]), "prev_g")
        self._prev_f = var(0.0, "prev_f")
        self._fresh = var(True, "fresh")  # no iteration since reset or restart: torch's first step
        # fn at the current x, when known.
        self._cache_valid = var(False, "cache_valid")
        self._cache_values = var(tf.zeros([num_values]), "cache_values")
        self._cache_g = var(tf.zeros([n]), "cache_g")

    def reset(self) -> None:
        """Forget history, caches and counters; then assign the new starting point to x."""
        self.num_evals.assign(0)
        self.converged.assign(False)
        self._head.assign(0)
        self._count.assign(0)
        self._h_diag.assign(1.0)
        self._has_prev.assign(False)
        self._fresh.assign(True)
        self._cache_valid.assign(False)

    def step(self) -> tf.Tensor:
        """One iteration; returns fn's values at x_k, the point before this step's update."""
        values, g = tf.cond(self._cache_valid, self._cached, self._evaluate_x)
        f = values[0]
        stop = self.converged | self._should_stop(f, g)
        self.converged.assign(stop)
        tf.cond(stop, lambda: None, lambda: self._iterate(values, g))
        return values

    # --- evaluations -------------------------------------------------------------------------

    def _evaluate(self, flat_x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        values, grad = self._fn(tf.reshape(flat_x, self._x.shape))
        return tf.ensure_shape(values, [self._num_values]), tf.reshape(grad, [-1])

    def _evaluate_x(self) -> tuple[tf.Tensor, tf.Tensor]:
        values, g = self._evaluate(tf.reshape(self._x, [-1]))
        self.num_evals.assign_add(1)
        self._cache_values.assign(values)
        self._cache_g.assign(g)
        self._cache_valid.assign(True)
        return values, g

    def _cached(self) -> tuple[tf.Tensor, tf.Tensor]:
        return self._cache_values.value(), self._cache_g.value()

    def _trial(self, x0: tf.Tensor, d: tf.Tensor, t: tf.Tensor) -> _Point:
        values, g = self._evaluate(x0 + t * d)
        return _Point(t, values[0], g, _dot(g, d), values)

    # --- one iteration -----------------------------------------------------------------------

    def _should_stop(self, f: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
        finite = tf.math.is_finite(f) & tf.reduce_all(tf.math.is_finite(g))
        grad_small = tf.reduce_max(tf.abs(g)) <= self._tol_grad
        flat = _dot(g, g) <= self._tol_change
        no_progress = self._has_prev & (
            (tf.reduce_max(tf.abs(self._prev_s)) <= self._tol_change)
            | (tf.abs(f - self._prev_f) < self._tol_change)
        )
        return ~finite | grad_small | flat | no_progress

    def _iterate(self, values: tf.Tensor, g: tf.Tensor) -> None:
        f = values[0]
        tf.cond(self._has_prev, lambda: self._remember(g), lambda: None)
        d = self._direction(g)
        gtd = _dot(g, d)
        # Stale or badly conditioned pairs can give a direction that is not downhill (torch then
        # stalls for good): drop them and restart from steepest descent.
        d, gtd, fresh = tf.cond(
            gtd < -self._tol_change, lambda: (d, gtd, self._fresh.value()), lambda: self._restart(g)
        )
        t = self._step_length(g, d, fresh)
        x0 = tf.reshape(self._x, [-1])
        if self._line_search == "none":
            self._cache_valid.assign(False)
        else:
            start = _Point(tf.constant(0.0), f, g, gtd, values)
            accepted, evals = _strong_wolfe(
                lambda t: self._trial(x0, d, t), start, t, d, self._max_evals, self._tol_change
            )
            t = accepted.t
            self.num_evals.assign_add(tf.cast(evals, tf.int64))
            self._cache_values.assign(accepted.values)
            self._cache_g.assign(accepted.g)
        # Same expression as in _trial, so x is bit-for-bit the point the cache describes.
        self._x.assign(tf.reshape(x0 + t * d, self._x.shape))
        self._prev_s.assign(t * d)
        self._prev_g.assign(g)
        self._prev_f.assign(f)
        self._has_prev.assign(True)
        self._fresh.assign(False)

    def _step_length(self, g: tf.Tensor, d: tf.Tensor, fresh: tf.Tensor) -> tf.Tensor:
        """The step length along d: the fixed step, or the line search's first trial."""
        if self._max_step > 0:
            # Without curvature pairs d = -g has no natural length. From the noise start the
            # curvature along torch's tiny first step is negative, so its pair is skipped and
            # the next step, -lr·g unscaled, moves pixels by hundreds of units (the loss jumps
            # 30-3000x). Early pairs also underestimate how fast the curvature grows, so later
            # steps can overshoot too. A bound in x's units stops both (docs/LBFGS_FIRST_STEP.md).
            # A fresh step (no pairs yet) moves exactly that far: where the objective is tiny in
            # x's units (loss_scale=reference, a small α) -lr·g is below float32's resolution
            # at x's values, x never moves, and no curvature pair ever forms.
            ratio = self._max_step / tf.reduce_max(tf.abs(d))
            return self._lr * tf.where(fresh, ratio, tf.minimum(1.0, ratio))
        # torch's: lr·min(1, 1/|g|_1) on the first step after a reset or restart, then lr.
        first_t = tf.minimum(1.0, 1.0 / tf.reduce_sum(tf.abs(g))) * self._lr
        return tf.where(fresh, first_t, self._lr)

    def _remember(self, g: tf.Tensor) -> None:
        """Store the pair from the previous iteration, if it has positive curvature."""
        s = self._prev_s.value()
        y = g - self._prev_g
        ys = _dot(y, s)
        tf.cond(ys > _MIN_CURVATURE, lambda: self._push(s, y, ys), lambda: None)

    def _push(self, s: tf.Tensor, y: tf.Tensor, ys: tf.Tensor) -> None:
        # Row updates in place: never materialise another [history_size, n] buffer.
        row = self._head.value()[tf.newaxis]
        self._s.scatter_update(tf.IndexedSlices(s[tf.newaxis], row))
        self._y.scatter_update(tf.IndexedSlices(y[tf.newaxis], row))
        self._rho.scatter_update(tf.IndexedSlices((1.0 / ys)[tf.newaxis], row))
        self._head.assign((self._head + 1) % self._m)
        self._count.assign(tf.minimum(self._count + 1, self._m))
        self._h_diag.assign(ys / _dot(y, y))

    def _restart(self, g: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
        self._count.assign(0)
        self._h_diag.assign(1.0)
        return -g, -_dot(g, g), tf.constant(True)

    def _direction(self, g: tf.Tensor) -> tf.Tensor:
        """-H g by the two-loop recursion over the stored pairs (just -h_diag g when empty)."""
        m, count, newest = self._m, self._count.value(), self._head - 1

        def row(j):  # ring-buffer row of the j-th newest pair
            return tf.math.floormod(newest - j, m)

        def newest_first(j, q, alpha):
            i = row(j)
            a = tf.gather(self._rho, i) * _dot(tf.gather(self._s, i), q)
            q -= a * tf.gather(self._y, i)
            return j + 1, q, tf.tensor_scatter_nd_update(alpha, [[j]], [a])

        _, q, alpha = tf.while_loop(
            lambda j, *_: j < count, newest_first, (0, -g, tf.zeros([m])), maximum_iterations=m
        )

        def oldest_first(j, r):
            i = row(j)
            b = tf.gather(self._rho, i) * _dot(tf.gather(self._y, i), r)
            r += (tf.gather(alpha, j) - b) * tf.gather(self._s, i)
            return j - 1, r

        _, r = tf.while_loop(
            lambda j, _: j >= 0, oldest_first, (count - 1, self._h_diag * q), maximum_iterations=m
        )
        return r
