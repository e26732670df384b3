"""torch.optim.LBFGS's strong-Wolfe line search, in TensorFlow, for one problem at a time."""

from collections.abc import Callable
from typing import NamedTuple

import tensorflow as tf

_C1, _C2 = 1e-4, 0.9  # strong-Wolfe constants (sufficient decrease, curvature), as torch
_BRACKET, _ZOOM, _DONE = 0, 1, 2  # phases


class Point(NamedTuple):
    """One evaluation of fn along the search direction d."""

    t: tf.Tensor  # step length
    f: tf.Tensor  # objective
    g: tf.Tensor  # flat gradient
    gtd: tf.Tensor  # directional derivative g·d
    values: tf.Tensor  # everything fn returned, so an accepted point is never re-evaluated


def _select(pred: tf.Tensor, a: Point, b: Point) -> Point:
    return tf.nest.map_structure(lambda u, v: tf.where(pred, u, v), a, b)


def _cubic_min(a: Point, b: Point, lo: tf.Tensor, hi: tf.Tensor) -> tf.Tensor:
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


def strong_wolfe(
    evaluate: Callable[[tf.Tensor], Point],
    start: Point,
    t: tf.Tensor,
    d: tf.Tensor,
    max_evals: int,
    tolerance_change: float,
) -> tuple[Point, tf.Tensor]:
    """Strong-Wolfe line search along d from `start` (t = 0), first trying step length t.

    torch's `_strong_wolfe`: bracket a step satisfying the conditions by extrapolation, then zoom
    in by cubic interpolation. Both phases share one tf.while_loop so `evaluate` (a full forward
    and backward pass) appears once in the graph. Returns the accepted point (`start` itself if
    nothing lower was found) and the number of evaluations, at most `max_evals`.
    """
    d_norm = tf.reduce_max(tf.abs(d))

    def sufficient_decrease(p: Point) -> tf.Tensor:  # Armijo
        return p.f <= start.f + _C1 * p.t * start.gtd

    def curvature(p: Point) -> tf.Tensor:
        return tf.abs(p.gtd) <= -_C2 * start.gtd

    def order(a: Point, b: Point) -> tuple[Point, Point]:
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
