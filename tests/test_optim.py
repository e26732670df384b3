"""Tests for nst_tf.optim: L-BFGS and Adam on small functions with known minima, the registry
and the optimisers' configs, and L-BFGS's first steps on the real objective."""

import inspect
import json
import math
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from nst_tf.errors import UserError
from nst_tf.hydra_setup import register_configs
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import paper_terms
from nst_tf.model import FeatureExtractor
from nst_tf.optim import LBFGS, OPTIMIZERS, Adam, make_optimizer, register
from nst_tf.optim.line_search import Point, strong_wolfe
from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS, AdamConfig, LbfgsConfig
from nst_tf.pictures import initial_image
from nst_tf.transfer import StyleTransfer, Weights

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
LINE_SEARCHES = ["none", "strong_wolfe"]
# torch.optim.LBFGS's defaults: these tests need tolerances > 0 to see convergence.
TORCH_LBFGS = {"history_size": 100, "line_search": "none", "learning_rate": 1.0,
               "max_line_search": 25, "tolerance_grad": 1e-7, "tolerance_change": 1e-9,
               "max_step": 0.0, "max_step_pairs": 0}


def lbfgs(fn, x: tf.Variable, num_values: int, **params) -> LBFGS:
    """LBFGS with torch's defaults for whatever `params` leaves out."""
    return LBFGS(batched(fn), x, num_values, **{**TORCH_LBFGS, **params})


def batched(fn):
    """`fn` over a batch of one, as the optimisers take it: x (1, ...) -> values (1, V)."""

    def over_batch(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        values, grad = fn(x[0])
        return values[None], grad[None]

    return over_batch


def one(value) -> tf.Variable:
    """A batch of one problem's x."""
    return tf.Variable(tf.convert_to_tensor(value, tf.float32)[None])


def values_and_grad(objective):
    """fn(x) -> ([f, *extras], df/dx) from objective(x) -> (f, extras)."""

    def fn(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            f, extras = objective(x)
        return tf.concat([[f], extras], 0), tape.gradient(f, x)

    return fn


def make_quadratic(n: int = 50, seed: int = 0):
    """f = ½ (x - x*)ᵀ A (x - x*), A with eigenvalues spread 1…100; logs |x - x*|² too."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    a = tf.constant((q * np.linspace(1.0, 100.0, n)) @ q.T, tf.float32)
    x_star = rng.standard_normal(n).astype(np.float32)

    def objective(x):
        r = x - x_star
        return 0.5 * tf.reduce_sum(r * tf.linalg.matvec(a, r)), [tf.reduce_sum(r * r)]

    return values_and_grad(objective), x_star


def rosenbrock(x):
    """Chained Rosenbrock: minimum 0 at (1, …, 1)."""
    return tf.reduce_sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2), []


def run(opt, step, x: tf.Variable, max_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Step until converged or max_steps; returns the values and the x after each step."""
    values, xs = [], []
    for _ in range(max_steps):
        values.append(step().numpy()[0])
        xs.append(x.numpy()[0])
        if getattr(opt, "converged", False) and opt.converged.numpy():
            break
    return np.array(values), np.array(xs)


@pytest.fixture(scope="module")
def quadratic():
    return make_quadratic()


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
@pytest.mark.parametrize("jit", [False, True])
def test_lbfgs_minimises_quadratic(quadratic, line_search, jit):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, line_search=line_search)
    values, _ = run(opt, tf.function(opt.step, jit_compile=jit), x, 200)
    assert opt.converged.numpy()
    np.testing.assert_allclose(x.numpy()[0], x_star, atol=1e-4)
    # The converged step reports values at the final x.
    np.testing.assert_allclose(values[-1], fn(x.value()[0])[0].numpy(), rtol=1e-4, atol=1e-12)
    assert values[-1][0] < 1e-6
    # A condition number of 100 in 50-D: far fewer steps than gradient descent would need.
    assert len(values) < 100


@pytest.mark.parametrize(
    "start, max_steps",
    [([-1.2, 1.0], 60), ([-1.2, 1.0] * 5, 150)],
    ids=["2d", "10d"],
)
def test_lbfgs_strong_wolfe_minimises_rosenbrock(start, max_steps):
    x = one(np.array(start, np.float32))
    opt = lbfgs(values_and_grad(rosenbrock), x, 1, line_search="strong_wolfe")
    values, _ = run(opt, tf.function(opt.step), x, max_steps)
    assert opt.converged.numpy(), f"not converged in {max_steps} steps, f = {values[-1][0]}"
    np.testing.assert_allclose(x.numpy()[0], 1.0, atol=1e-4)


@pytest.mark.parametrize("max_step", [0.0, 0.1], ids=["torch", "bounded"])
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_first_step_is_scaled_steepest_descent(quadratic, line_search, max_step):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    _, g = fn(x.value()[0])
    g = g.numpy()
    assert np.abs(g).sum() > 1 and np.abs(g).max() > 0.1  # so the scaling matters
    opt = lbfgs(fn, x, 2, line_search=line_search, learning_rate=0.5, max_step=max_step)
    opt.step()
    if line_search == "none":
        # torch's first step: t = lr·min(1, 1/|g|_1); bounded: t = lr·min(1, max_step/max|g|)
        t = 0.5 * (max_step / np.abs(g).max() if max_step else 1 / np.abs(g).sum())
        np.testing.assert_allclose(x.numpy()[0], -t * g, rtol=1e-5)
    else:  # the line search starts there and may move anywhere along -g
        t = x.numpy()[0] / -g
        np.testing.assert_allclose(t, t[0], rtol=1e-4)


@pytest.mark.parametrize("max_step", [0.0, 0.3], ids=["torch", "bounded"])
def test_lbfgs_skips_pairs_without_positive_curvature(max_step):
    # Σ cos x is concave on (-π/2, π/2): y·s < 0 for steps inside it, so no pair is stored.
    x = one(tf.fill([3], 0.5))
    opt = lbfgs(values_and_grad(lambda x: (tf.reduce_sum(tf.cos(x)), [])), x, 1,
                max_step=max_step)
    opt.step()
    assert np.all(np.abs(x.numpy()[0]) < np.pi / 2)
    x_1, g_1 = x.numpy()[0], -np.sin(x.numpy()[0])
    assert np.abs(g_1).sum() > 1  # so the scaled restart step would differ from the plain one
    opt.step()  # considers the pair from the first step
    assert opt._count.numpy() == 0
    # The pair is skipped, not a reason to restart: a steepest-descent step of length lr
    # (torch's: the step that overshoots on the real objective), or max_step in max norm.
    t = max_step / np.abs(g_1).max() if max_step else 1.0
    np.testing.assert_allclose(x.numpy()[0], x_1 - t * g_1, rtol=1e-6)
    # ...whereas once past the inflection point curvature is positive again.
    for _ in range(5):
        opt.step()
    assert opt._count.numpy() > 0


def test_lbfgs_max_step_bounds_every_step(quadratic):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, learning_rate=0.5, max_step=0.2)
    _, xs = run(opt, tf.function(opt.step), x, 300)
    steps = np.abs(np.diff(xs, axis=0, prepend=0)).max(axis=1)
    assert steps.max() <= 0.5 * 0.2 * (1 + 1e-5)  # lr·max_step
    assert np.sum(steps > 0.099) >= 5  # the bound was in effect, not just never reached
    assert opt.converged.numpy()
    np.testing.assert_allclose(x.numpy()[0], x_star, atol=1e-4)


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_restarts_when_direction_is_not_downhill(quadratic, line_search):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, line_search=line_search)
    for _ in range(3):
        opt.step()
    assert opt._count.numpy() > 0
    # Simulate a history gone bad: the two-loop recursion proposes going uphill.
    opt._direction = lambda g: g
    x_k, g_k = x.numpy()[0], fn(x.value()[0])[1].numpy()
    opt.step()
    assert opt._count.numpy() == 0 and opt._h_diag.numpy() == 1.0  # history dropped
    assert fn(x.value()[0])[0][0] < fn(tf.constant(x_k))[0][0]
    step = x.numpy()[0] - x_k
    np.testing.assert_allclose(step / -g_k, (step / -g_k)[0], rtol=1e-3)  # along -g
    if line_search == "none":  # with the first step's length
        np.testing.assert_allclose(step, -g_k / np.abs(g_k).sum(), rtol=1e-4)


def phi_rational(t):
    """Moré & Thuente's first test function, -t / (t² + 2): minimum at √2."""
    return -t / (t * t + 2.0)


def phi_steep(t):
    """A narrow quadratic valley at t = 3 with a NaN wall beyond t = 5."""
    return tf.where(t < 5.0, 50.0 * (t - 3.0) ** 2, float("nan"))


@pytest.mark.parametrize("phi", [phi_rational, phi_steep])
@pytest.mark.parametrize("t0", [1e-3, 0.5, 4.0, 100.0])
def test_strong_wolfe_accepts_a_strong_wolfe_point(phi, t0):
    fn = values_and_grad(lambda x: (tf.reduce_sum(phi(x)), []))
    f0, g0 = fn(tf.zeros([1]))
    d = tf.ones([1])
    start = Point(tf.constant(0.0), f0[0], g0, tf.reduce_sum(g0 * d), f0)

    def evaluate(t):
        values, g = fn(t * d)
        return Point(t, values[0], g, tf.reduce_sum(g * d), values)

    accepted, evals = strong_wolfe(evaluate, start, tf.constant(t0), d, 25, 1e-9)
    t = accepted.t.numpy()
    f, g = fn(tf.constant([t]))
    assert 1 <= evals.numpy() <= 25
    np.testing.assert_allclose(accepted.f.numpy(), f[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(accepted.g.numpy(), g.numpy(), rtol=1e-5)
    assert f[0] <= f0[0] + 1e-4 * t * start.gtd  # sufficient decrease
    assert abs(g[0]) <= -0.9 * start.gtd  # strong curvature condition


def torch_strong_wolfe(phi, t, max_ls=25, c1=1e-4, c2=0.9, tolerance_change=1e-9):
    """torch.optim.lbfgs._strong_wolfe, transcribed for a 1-D phi(t) -> (f, slope) in float64.

    Returns (accepted t, number of evaluations). Fails if it runs out of evaluations, where torch
    allows one more than max_ls and nst_tf does not.
    """

    def cubic(x1, f1, g1, x2, f2, g2, bounds=None):
        lo, hi = bounds if bounds else (min(x1, x2), max(x1, x2))
        d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
        d2_square = d1**2 - g1 * g2
        if d2_square < 0:
            return (lo + hi) / 2
        d2 = math.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, lo), hi)

    f, gtd = phi(0.0)
    f_new, gtd_new = phi(t)
    evals, ls_iter, done = 1, 0, False
    t_prev, f_prev, gtd_prev = 0.0, f, gtd
    while ls_iter < max_ls:
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= f_prev):
            bracket = [[t_prev, f_prev, gtd_prev], [t, f_new, gtd_new]]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [[t, f_new, gtd_new]] * 2, True
            break
        if gtd_new >= 0:
            bracket = [[t_prev, f_prev, gtd_prev], [t, f_new, gtd_new]]
            break
        t_next = cubic(
            t_prev, f_prev, gtd_prev, t, f_new, gtd_new, (t + 0.01 * (t - t_prev), 10 * t)
        )
        t_prev, f_prev, gtd_prev, t = t, f_new, gtd_new, t_next
        f_new, gtd_new = phi(t)
        evals, ls_iter = evals + 1, ls_iter + 1
    else:
        raise AssertionError("reference line search ran out of evaluations")
    low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
    insuf_progress = False
    while not done and ls_iter < max_ls:
        if abs(bracket[1][0] - bracket[0][0]) < tolerance_change:
            break
        t = cubic(*bracket[0], *bracket[1])
        b_min, b_max = min(bracket[0][0], bracket[1][0]), max(bracket[0][0], bracket[1][0])
        eps = 0.1 * (b_max - b_min)
        if min(b_max - t, t - b_min) < eps:
            if insuf_progress or t >= b_max or t <= b_min:
                t = b_max - eps if abs(t - b_max) < abs(t - b_min) else b_min + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False
        f_new, gtd_new = phi(t)
        evals, ls_iter = evals + 1, ls_iter + 1
        if f_new > f + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = [t, f_new, gtd_new]
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = [t, f_new, gtd_new]
    return bracket[low][0], evals


def phi_wiggly(t):
    """Several local minima, so the zoom has to re-bracket."""
    return (t - 2.0) ** 2 / 4 + 0.3 * tf.sin(6.0 * t) - 1.8 * t


def phi_kink(t):
    """No point satisfies the curvature condition: the zoom runs until the bracket is tiny."""
    return tf.abs(t - 1.39) + 0.0138 * t**2


def phi_bump(t):
    """A bump in a long slope: trial steps land near the bracket's ends."""
    return 0.0607 * t**2 - t + 1.548 * tf.exp(-(((t - 0.1453) / 0.0339) ** 2))


@pytest.mark.parametrize(
    "phi, t0, tolerance_change",
    [
        (phi_rational, 1e-3, 1e-9),  # extrapolates
        (phi_rational, 0.5, 1e-9),
        (phi_rational, 4.0, 1e-9),  # zooms
        (phi_steep, 1e-3, 1e-9),
        (phi_steep, 4.0, 1e-9),
        (phi_wiggly, 0.3, 1e-9),
        (phi_wiggly, 2.5, 1e-9),
        (phi_kink, 0.85, 1e-3),
        (phi_bump, 0.01429, 1e-9),
    ],
)
def test_strong_wolfe_matches_torch(phi, t0, tolerance_change):
    fn = values_and_grad(lambda x: (tf.reduce_sum(phi(x)), []))

    def phi64(t):
        values, g = fn(tf.constant([t], tf.float64))
        return float(values[0]), float(g[0])

    t_ref, evals_ref = torch_strong_wolfe(phi64, t0, tolerance_change=tolerance_change)
    # Also in float64: in float32 the cubic fits are too noisy at tiny steps to compare branches.
    f0, g0 = fn(tf.zeros([1], tf.float64))
    d = tf.ones([1], tf.float64)
    start = Point(tf.constant(0.0, tf.float64), f0[0], g0, tf.reduce_sum(g0 * d), f0)

    def evaluate(t):
        values, g = fn(t * d)
        return Point(t, values[0], g, tf.reduce_sum(g * d), values)

    t = tf.constant(t0, tf.float64)
    accepted, evals = strong_wolfe(evaluate, start, t, d, 25, tolerance_change)
    assert evals.numpy() == evals_ref
    np.testing.assert_allclose(accepted.t.numpy(), t_ref, rtol=1e-12)


def test_lbfgs_stops_at_small_gradient(quadratic):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, tolerance_grad=0.1)
    _, xs = run(opt, tf.function(opt.step), x, 200)
    max_grad = [np.abs(fn(tf.constant(x_k))[1].numpy()).max() for x_k in xs]
    # The step from x_k that finds max|g| <= 0.1 stops without moving; no earlier one does.
    assert opt.converged.numpy() and max_grad[-1] <= 0.1
    np.testing.assert_array_equal(xs[-1], xs[-2])
    assert min(max_grad[:-2]) > 0.1


def test_lbfgs_stops_when_objective_stops_changing():
    # Around 1000 float32 resolves changes of 6e-5 only: f stalls well before the gradient or
    # the steps get small.
    x = one(tf.fill([10], 2.0))
    fn = values_and_grad(
        lambda x: (1000.0 + tf.reduce_sum((x - 1.0) ** 2 * tf.range(1.0, 11.0)), [])
    )
    opt = lbfgs(fn, x, 1, line_search="strong_wolfe")
    values, _ = run(opt, tf.function(opt.step), x, 200)
    f = values[:, 0]
    assert opt.converged.numpy()
    assert f[-1] == f[-2] and np.all(f[1:-1] != f[:-2])


def test_lbfgs_without_line_search_evaluates_once_per_step(quadratic):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, line_search="none")
    step = tf.function(opt.step)
    for k in range(1, 21):
        step()
        assert opt.num_evals.numpy() == k
    assert not opt.converged.numpy()


def test_lbfgs_strong_wolfe_counts_and_reuses_evaluations(quadratic):
    fn, x_star = quadratic
    calls = tf.Variable(0, dtype=tf.int64)

    def counted(x):
        calls.assign_add(1)
        return fn(x)

    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(counted, x, 2, line_search="strong_wolfe")
    values, _ = run(opt, tf.function(opt.step), x, 200)
    assert opt.num_evals.numpy() == calls.numpy()
    # On a quadratic the unit step is nearly always accepted at once; re-evaluating x_k at the
    # start of each step would cost at least two evaluations per step.
    assert opt.num_evals.numpy() < 1.5 * len(values)
    # Once converged, steps neither move x nor evaluate fn again.
    x_end, evals = x.numpy()[0], opt.num_evals.numpy()
    again = tf.function(opt.step)()
    np.testing.assert_array_equal(x.numpy()[0], x_end)
    np.testing.assert_array_equal(again.numpy()[0], values[-1])
    assert opt.num_evals.numpy() == evals


@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_returns_values_before_the_update(quadratic, line_search):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, line_search=line_search)
    step = tf.function(opt.step)
    for _ in range(10):
        x_k = x.numpy()[0]
        values = step().numpy()
        assert not np.array_equal(x.numpy()[0], x_k)  # the step did move
        expected, _ = fn(tf.constant(x_k))
        np.testing.assert_allclose(values[0], expected.numpy(), rtol=1e-6)


@pytest.mark.parametrize("max_step", [0.0, 0.5], ids=["torch", "bounded"])
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_reset_reuses_compiled_step(quadratic, line_search, max_step):
    fn, x_star = quadratic
    rng = np.random.default_rng(1)
    x_new = rng.standard_normal(x_star.shape).astype(np.float32)

    x = one(tf.zeros(x_star.shape))
    opt = lbfgs(fn, x, 2, line_search=line_search, history_size=5, max_step=max_step)
    step = tf.function(opt.step)
    run(opt, step, x, 200)  # to convergence: history full, caches and flags all set
    assert opt.converged.numpy()
    opt.reset()
    x.assign(x_new[None])
    reused = run(opt, step, x, 30)
    assert step.experimental_get_tracing_count() == 1

    x_fresh = one(x_new)
    fresh_opt = lbfgs(fn, x_fresh, 2, line_search=line_search, history_size=5,
                      max_step=max_step)
    fresh = run(fresh_opt, tf.function(fresh_opt.step), x_fresh, 30)
    np.testing.assert_array_equal(reused[0], fresh[0])
    np.testing.assert_array_equal(reused[1], fresh[1])
    assert opt.num_evals.numpy() == fresh_opt.num_evals.numpy()


@pytest.mark.parametrize("max_step", [0.0, 0.5], ids=["torch", "bounded"])
@pytest.mark.parametrize("line_search", LINE_SEARCHES)
def test_lbfgs_runs_are_bit_identical(line_search, max_step):
    def trajectory():
        x = one(np.array([-1.2, 1.0] * 5, np.float32))
        opt = lbfgs(values_and_grad(rosenbrock), x, 1, line_search=line_search, learning_rate=0.1,
                    max_step=max_step)
        return run(opt, tf.function(opt.step, jit_compile=True), x, 40)

    first, second = trajectory(), trajectory()
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_lbfgs_line_search_backs_off_from_non_finite_values():
    # f = Σ x - log x: minimum at 1, NaN for x < 0. Steps of length 10 overshoot into the NaNs.
    def objective(x):
        return tf.reduce_sum(x - tf.math.log(x)), []

    fn = values_and_grad(objective)
    non_finite = tf.Variable(0)

    def counted(x):
        values, grad = fn(x)
        non_finite.assign_add(tf.cast(~tf.math.is_finite(values[0]), tf.int32))
        return values, grad

    x = one(tf.fill([4], 3.0))
    opt = lbfgs(counted, x, 1, line_search="strong_wolfe", learning_rate=10.0)
    values, _ = run(opt, tf.function(opt.step), x, 100)
    assert non_finite.numpy() > 0  # the line search did step into the NaNs
    assert np.isfinite(values).all()
    np.testing.assert_allclose(x.numpy()[0], 1.0, atol=1e-3)
    assert np.isfinite(opt._s.numpy()).all() and np.isfinite(opt._y.numpy()).all()


def test_lbfgs_fixed_step_stops_at_non_finite_values():
    def objective(x):
        return tf.reduce_sum(x - tf.math.log(x)), []

    x = one(tf.fill([4], 3.0))
    opt = lbfgs(values_and_grad(objective), x, 1, line_search="none", learning_rate=10.0)
    step = tf.function(opt.step)
    values, _ = run(opt, step, x, 100)
    assert opt.converged.numpy() and not np.isfinite(values[-1]).all()
    assert np.isfinite(opt._s.numpy()).all() and np.isfinite(opt._y.numpy()).all()
    x_end = x.numpy()[0]
    step()
    np.testing.assert_array_equal(x.numpy()[0], x_end)


@pytest.mark.parametrize(
    "max_step",
    [
        pytest.param(0.0, marks=pytest.mark.xfail(
            strict=True, reason="torch's steps: the loss rises 3470x at iteration 2 here")),
        LbfgsConfig().max_step,
    ],
    ids=["torch", "default"],
)
def test_lbfgs_from_noise_never_raises_the_loss_by_half(vgg_weights, images_dir, max_step):
    """The real objective at 64 px (docs/LBFGS_FIRST_STEP.md measures 128-512 px): the default
    L-BFGS never raises the total loss by more than 50% in one iteration from the noise start."""
    content_layers, style_layers = ["conv4_2"], ["conv1_1", "conv2_1", "conv3_1", "conv4_1",
                                                 "conv5_1"]
    content, style = (to_array(fit_long_side(read_rgb(images_dir / name), 64))
                      for name in ("tubingen.jpg", "starry_night.jpg"))
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", content_layers + style_layers, "fp32")
    params = LbfgsConfig(max_step=max_step).params()
    transfer = StyleTransfer(extractor, paper_terms(content_layers, style_layers),
                             content.shape[:2], "lbfgs", params)
    weights = Weights.paper(alpha=1e-3, beta=1.0, tv=0.0, content_layers={"conv4_2": 1.0},
                      style_layers={name: 0.2 for name in style_layers})
    transfer.start(content, style, initial_image("noise", content, content, 0), weights)
    losses = np.array([transfer.step()["total"] for _ in range(20)])
    assert np.all(losses[1:] <= 1.5 * losses[:-1]), losses
    assert losses[-1] < 0.2 * losses[0]  # and it does make progress


def test_adam_lowers_quadratic_and_resets(quadratic):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = Adam(batched(fn), x, 2, learning_rate=0.05, beta_1=0.9, beta_2=0.999, epsilon=1e-8)
    step = tf.function(opt.step, jit_compile=True)
    first, _ = run(opt, step, x, 100)
    assert first[-1][0] < 0.05 * first[0][0]
    assert opt.num_evals.numpy() == 100

    opt.reset()
    x.assign(tf.zeros([1, *x_star.shape]))
    again, _ = run(opt, step, x, 100)
    np.testing.assert_array_equal(again, first)  # moments, step count and learning rate restored
    assert opt.num_evals.numpy() == 100
    assert step.experimental_get_tracing_count() == 1


def test_make_optimizer_dispatches(quadratic):
    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    opt = make_optimizer("lbfgs", batched(fn), x, 2, history_size=3, line_search="strong_wolfe")
    assert isinstance(opt, LBFGS) and opt._s.shape == (1 * 3, x_star.size)
    assert isinstance(make_optimizer("adam", batched(fn), x, 2, learning_rate=1.0), Adam)
    with pytest.raises(ValueError, match="unknown optimizer 'sgd'; expected one of 'adam', 'lb"):
        make_optimizer("sgd", batched(fn), x, 2)
    with pytest.raises(ValueError, match="line_search"):
        make_optimizer("lbfgs", batched(fn), x, 2, line_search="armijo")


@pytest.mark.parametrize("name", sorted(OPTIMIZER_SCHEMAS))
def test_each_config_is_its_optimizers_only_defaults(quadratic, name):
    cls, schema = OPTIMIZERS[name], OPTIMIZER_SCHEMAS[name]
    signature = inspect.signature(cls)
    keyword_only = [p for p in signature.parameters.values() if p.kind == p.KEYWORD_ONLY]
    assert all(p.default is p.empty for p in keyword_only)  # no defaults of the class's own
    assert {p.name for p in keyword_only} == {f.name for f in fields(schema)} - {"name"}
    # optimizer=NAME composes to the config's defaults.
    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        composed = compose("config", overrides=[f"optimizer={name}"]).optimizer
    assert OmegaConf.to_object(composed) == schema()
    # Parameters not given come from the config's defaults.
    fn, x_star = quadratic
    make_optimizer(name, batched(fn), one(tf.zeros(x_star.shape)), 2)


@pytest.mark.parametrize(
    "config, message",
    [
        (LbfgsConfig(learning_rate=0.0), "optimizer.learning_rate=0.0 must be > 0"),
        (LbfgsConfig(history_size=0), "optimizer.history_size=0 must be >= 1"),
        (LbfgsConfig(max_line_search=0), "optimizer.max_line_search=0 must be >= 1"),
        (LbfgsConfig(tolerance_change=-1.0),
         "optimizer.tolerance_change=-1.0 must be >= 0 (0 = off)"),
        (AdamConfig(learning_rate=-1.0), "optimizer.learning_rate=-1.0 must be > 0"),
        (AdamConfig(beta_2=1.0), "optimizer.beta_2=1.0 must be in [0, 1)"),
        (AdamConfig(epsilon=0.0), "optimizer.epsilon=0.0 must be > 0"),
    ],
)
def test_optimizer_configs_check_themselves(config, message):
    with pytest.raises(UserError) as error:
        config.check()
    assert str(error.value) == message
    type(config)().check()  # the defaults pass


@pytest.fixture
def registry():
    """Lets a test register optimisers; the registry is put back afterwards."""
    before = dict(OPTIMIZERS)
    yield OPTIMIZERS
    OPTIMIZERS.clear()
    OPTIMIZERS.update(before)


def test_a_registered_optimizer_runs_through_make_optimizer(registry, quadratic):
    # The recipe for a new optimiser, minus its config and YAML (make_optimizer then has no
    # defaults to fill in, so the call gives every parameter).
    @register("gradient_descent")
    class GradientDescent:
        def __init__(self, fn, x: tf.Variable, num_values: int, *, learning_rate: float) -> None:
            self._fn, self._x, self._num_values, self._lr = fn, x, num_values, learning_rate
            self.num_evals = tf.Variable(tf.constant(0, tf.int64), trainable=False)

        def step(self) -> tf.Tensor:
            values, grad = self._fn(tf.convert_to_tensor(self._x))
            self._x.assign_sub(self._lr * grad)
            self.num_evals.assign_add(1)
            return tf.ensure_shape(values, [1, self._num_values])

        def reset(self) -> None:
            self.num_evals.assign(0)

        @staticmethod
        def image_buffers(history_size: int) -> int:
            return 0  # nothing image-sized besides x

    fn, x_star = quadratic
    x = one(tf.zeros(x_star.shape))
    # learning_rate < 2 / λmax = 0.02
    opt = make_optimizer("gradient_descent", batched(fn), x, 2, learning_rate=0.015)
    assert isinstance(opt, GradientDescent)
    values, _ = run(opt, tf.function(opt.step), x, 200)
    assert values[-1][0] < 0.01 * values[0][0] and opt.num_evals.numpy() == 200
    with pytest.raises(TypeError, match="learning_rate"):
        make_optimizer("gradient_descent", fn, x, 2)
    with pytest.raises(ValueError, match="already registered"):
        register("gradient_descent")(GradientDescent)
    with pytest.raises(TypeError, match="'undeclared' declares no image_buffers"):
        register("undeclared")(type("Undeclared", (), {}))


# A plug-in (nst_tf.plugins) adding an optimiser the documented way: its class, declaring what
# the memory check counts, registered by name, and its config dataclass in OPTIMIZER_SCHEMAS.
# Steps of at most learning_rate px along the momentum of the gradient scaled to max |g| = 1.
OPTIMIZER_PLUGIN = """
from dataclasses import dataclass

import tensorflow as tf

from nst_tf.errors import UserError
from nst_tf.optim import register
from nst_tf.optimizer_config import OPTIMIZER_SCHEMAS, OptimizerConfig


@register("momentum")
class Momentum:
    def __init__(self, fn, x, num_values, *, learning_rate, momentum):
        self._fn, self._x, self._num_values = fn, x, num_values
        self._lr, self._momentum = learning_rate, momentum
        self._velocity = tf.Variable(tf.zeros_like(x), trainable=False)
        self.num_evals = tf.Variable(tf.constant(0, tf.int64), trainable=False)

    @staticmethod
    def image_buffers(history_size):
        return 1  # the velocity

    def step(self):
        values, grad = self._fn(tf.convert_to_tensor(self._x))
        axes = list(range(1, len(self._x.shape)))
        scaled = grad / (tf.reduce_max(tf.abs(grad), axis=axes, keepdims=True) + 1e-30)
        self._velocity.assign(self._momentum * self._velocity + scaled)
        self._x.assign_sub(self._lr * self._velocity)
        self.num_evals.assign_add(1)
        return tf.ensure_shape(values, [self._x.shape[0], self._num_values])

    def reset(self):
        self._velocity.assign(tf.zeros_like(self._velocity))
        self.num_evals.assign(0)


@dataclass
class MomentumConfig(OptimizerConfig):
    name: str = "momentum"
    learning_rate: float = 2.0
    momentum: float = 0.5

    def check(self):
        if not 0 <= self.momentum < 1:
            raise UserError(f"optimizer.momentum={self.momentum} must be in [0, 1)")


OPTIMIZER_SCHEMAS["momentum"] = MomentumConfig
"""


def test_recipe_add_an_optimizer(registry, monkeypatch, install_plugin, tmp_path):
    """The plug-in's optimiser in this process (make_optimizer, the memory check) and in a run
    of the command, planned in tiles: the memory check counts what the optimiser declares."""
    from nst_tf.memory import AUTO_TILE_HEADROOM, GIB, Parts, estimate_peak, plan_tiling, tiled_peak
    from nst_tf.plugins import load_plugins
    from tests.helpers import FAST, read_csv, run_nst

    install_plugin("momentum_optimizer", OPTIMIZER_PLUGIN)
    monkeypatch.setitem(OPTIMIZER_SCHEMAS, "momentum", None)  # taken out again after the test
    assert "momentum_optimizer" in load_plugins()
    x = tf.Variable(tf.fill([1, 4, 4, 3], 100.0))
    fn = batched(lambda p: (tf.reshape(tf.reduce_sum(tf.square(p)), [1]), 2 * p))
    step = tf.function(make_optimizer("momentum", fn, x, 1).step)  # the config's defaults
    assert float(step()[0, 0]) == 48 * 100.0**2
    for _ in range(2):
        step()
    assert float(tf.reduce_max(x)) == 100.0 - 2.0 - 3.0 - 3.5  # learning_rate 2, momentum 0.5
    pixels = 4096 * 3072
    # One image-sized buffer, where Adam keeps two.
    momentum = Parts.of("momentum")
    assert estimate_peak(pixels, 0, Parts.of("adam")) - estimate_peak(pixels, 0, momentum) == (
        pixels * 12)
    whole = estimate_peak(pixels, pixels, momentum)
    chosen = plan_tiling("auto", "size", 4096, (4096, 3072), pixels, momentum,
                         available=0.75 * whole)
    assert chosen.tile and chosen.estimate <= AUTO_TILE_HEADROOM * 0.75 * whole < tiled_peak(
        (4096, 3072), chosen.tile + 64, momentum)

    out = tmp_path / "run"
    result = run_nst("optimizer=momentum", "optimizer.learning_rate=4", "size=96", "tile=64",
                     "iterations=4", "precision=fp32", "save_every=0", *FAST,
                     f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["optimizer"] == {"name": "momentum", "learning_rate": 4.0,
                                              "momentum": 0.5}
    assert summary["stages"][0]["tile"] == 64
    content = Image.open(out / "result.png").size
    assert summary["tiling"][0]["estimate_gib"] == round(
        tiled_peak(content, 64, momentum) / GIB, 2)
    rows = read_csv(out / "losses.csv")
    assert rows[-1]["total"] < rows[0]["total"]


def test_a_fresh_step_moves_x_whatever_the_objectives_scale():
    """A quadratic so flat in x's units that -g is below float32's resolution at x's values:
    torch's first step leaves x where it is for ever; a fresh bounded step moves it."""
    target = tf.constant(np.linspace(0, 255, 48, dtype=np.float32))
    x = one(tf.fill([48], 128.0))

    def fn(point: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        with tf.GradientTape() as tape:
            tape.watch(point)
            f = 1e-14 * tf.reduce_sum(tf.square(point - target))
        return tf.reshape(f, [1]), tape.gradient(f, point)

    losses = {}
    for max_step in (0.0, 48.0):
        x.assign(tf.fill([1, 48], 128.0))
        optimizer = make_optimizer("lbfgs", batched(fn), x, 1,
                                   **LbfgsConfig(max_step=max_step).params())
        step = tf.function(optimizer.step)
        losses[max_step] = [float(step()[0, 0]) for _ in range(30)]
    assert losses[0.0][-1] == losses[0.0][0]  # stuck
    assert losses[48.0][-1] < 1e-3 * losses[48.0][0]


@pytest.mark.parametrize("jit", [False, True])
def test_lbfgs_never_reads_its_whole_history(quadratic, monkeypatch, jit):
    """Row updates put the history buffers in TensorFlow's copy-on-read mode, where a dense read
    copies all of them: read per pair, that made a plain 512 px run's late steps 2.5x (fp32) to
    6x (bf16) slower. Only rows may be read (a sparse gather), at any history length and batch."""
    from tensorflow.python.ops import resource_variable_ops

    dense_reads = []
    original = resource_variable_ops.BaseResourceVariable._read_variable_op

    def spy(self, *args, **kwargs):
        dense_reads.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(resource_variable_ops.BaseResourceVariable, "_read_variable_op", spy)
    fn, x_star = quadratic
    x = tf.Variable(tf.zeros([2, *x_star.shape]))
    opt = LBFGS(lambda xs: tf.map_fn(fn, xs, fn_output_signature=(
        tf.float32, tf.float32)), x, 2, **{**TORCH_LBFGS, "history_size": 5})
    step = tf.function(opt.step, jit_compile=jit)
    first = step().numpy()  # traced here
    for _ in range(30):  # the history fills and wraps
        last = step().numpy()
    assert dense_reads, "the spy saw no reads at all: it no longer watches the right method"
    assert {opt._s.name, opt._y.name, opt._rho.name}.isdisjoint(dense_reads)
    np.testing.assert_array_less(last[:, 0], 1e-3 * first[:, 0])
