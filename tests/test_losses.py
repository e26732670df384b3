"""The losses against an independent float64 NumPy reading of the paper's formulas."""

import numpy as np
import pytest
import tensorflow as tf

from nst_tf import losses
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import paper_terms
from nst_tf.losses import weights_by_layer as layer_weights
from nst_tf.model import FeatureExtractor
from nst_tf.transfer import StyleTransfer, Weights

STYLE = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
ADAM = {"learning_rate": 10.0, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}


@pytest.fixture(scope="module")
def pictures(images_dir):
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 64))
    style = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), 64))
    return content, style


@pytest.fixture(scope="module")
def extractor(vgg_weights):
    return FeatureExtractor(vgg_weights.arrays, "avg", ["conv4_2", *STYLE])


def np_gram(f: np.ndarray) -> np.ndarray:
    flat = f.reshape(-1, f.shape[-1]).astype(np.float64)  # M × N
    return flat.T @ flat


def np_content(f: np.ndarray, p: np.ndarray) -> float:
    return 0.5 * np.sum((f.astype(np.float64) - p.astype(np.float64)) ** 2)


def np_style_layer(f: np.ndarray, a: np.ndarray) -> float:
    n, m = f.shape[-1], f.shape[1] * f.shape[2]
    return np.sum((np_gram(f) - np_gram(a)) ** 2) / (4.0 * n**2 * m**2)


def test_layer_losses_match_numpy(pictures, extractor):
    content, style = pictures
    noise = np.random.default_rng(1).uniform(0, 255, content.shape).astype(np.float32)
    x, p, s = (extractor(tf.constant(a[None])) for a in (noise, content, style))
    got = losses.content_loss(x["conv4_2"], p["conv4_2"]).numpy()[0]
    want = np_content(x["conv4_2"].numpy(), p["conv4_2"].numpy())
    assert got == pytest.approx(want, rel=1e-4)
    for name in STYLE:
        a_gram = losses.gram_matrix(s[name])
        np.testing.assert_allclose(a_gram.numpy()[0], np_gram(s[name].numpy()), rtol=1e-4,
                                   atol=1e-2)
        got = losses.style_layer_loss(x[name], a_gram).numpy()[0]
        want = np_style_layer(x[name].numpy(), s[name].numpy())
        assert got == pytest.approx(want, rel=1e-4), name


def test_total_matches_numpy(pictures, extractor):
    content, style = pictures
    transfer = StyleTransfer(extractor, paper_terms(["conv4_2"], STYLE), content.shape[:2], "adam",
                             ADAM)
    weights = Weights.paper(1e-3, 1.0, 0.5, layer_weights(["conv4_2"], None),
                            layer_weights(STYLE, None))
    init = np.random.default_rng(2).uniform(0, 255, content.shape).astype(np.float32)
    transfer.start(content, style, init, weights)
    got = transfer.evaluate()

    x, p, s = (extractor(tf.constant(a[None])) for a in (init, content, style))
    want_content = np_content(x["conv4_2"].numpy(), p["conv4_2"].numpy())
    want_style = sum(0.2 * np_style_layer(x[n].numpy(), s[n].numpy()) for n in STYLE)
    img = init.astype(np.float64)
    want_tv = np.sum(np.diff(img, axis=0) ** 2) + np.sum(np.diff(img, axis=1) ** 2)
    assert got["content"] == pytest.approx(want_content, rel=1e-4)
    assert got["style"] == pytest.approx(want_style, rel=1e-4)
    assert got["tv"] == pytest.approx(want_tv, rel=1e-4)
    want_total = 1e-3 * want_content + want_style + 0.5 * want_tv
    assert got["total"] == pytest.approx(want_total, rel=1e-4)


def test_gradient_matches_finite_differences(pictures, extractor):
    content, style = pictures
    shape = (32, 24)
    small = [np.ascontiguousarray(a[: shape[0], : shape[1]]) for a in (content, style)]
    transfer = StyleTransfer(extractor, paper_terms(["conv4_2"], STYLE), shape, "adam", ADAM)
    weights = Weights.paper(1e-2, 1.0, 0.0, layer_weights(["conv4_2"], None),
                            layer_weights(STYLE, None))
    rng = np.random.default_rng(3)
    x0 = rng.uniform(0, 255, (*shape, 3)).astype(np.float32)
    transfer.start(*small, x0, weights)
    values, grad = transfer._values_and_grad(tf.constant(x0[None]))
    grad = grad.numpy()[0].astype(np.float64)

    def total(x: np.ndarray) -> float:
        return float(transfer._values(tf.constant(x[None].astype(np.float32)))[0, 0])

    unit = grad / np.linalg.norm(grad)
    for _ in range(3):
        # Partly along the gradient, so the change beats float32 rounding of the loss.
        direction = rng.standard_normal(x0.shape)
        direction = unit + direction / np.linalg.norm(direction)
        eps = 0.5  # pixel units, small against ReLU kinks
        numeric = (total(x0 + eps * direction) - total(x0 - eps * direction)) / (2 * eps)
        analytic = float(np.sum(grad * direction))
        assert analytic == pytest.approx(numeric, rel=2e-3)


# --- loss_scale=reference: the authors' code's scaling, read independently ------------------------

def np_reference_content(f: np.ndarray, p: np.ndarray) -> float:
    return np.mean((f.astype(np.float64) - p.astype(np.float64)) ** 2)


def np_reference_style_layer(f: np.ndarray, a: np.ndarray) -> float:
    """PytorchNeuralStyleTransfer: GramMatrix divides by h·w; GramMSELoss is the mean squared
    error; the layer's weight is 1e3/N² against content weight 1 (here 1/N², and β = 1e3·α)."""
    n = f.shape[-1]
    g = np_gram(f) / (f.shape[1] * f.shape[2])
    t = np_gram(a) / (a.shape[1] * a.shape[2])
    return np.mean((g - t) ** 2) / n**2


def test_reference_total_matches_numpy(pictures, extractor):
    content, style = pictures
    style = np.ascontiguousarray(style[:40])  # the style's own M, unlike the content's
    transfer = StyleTransfer(extractor, paper_terms(["conv4_2"], STYLE, reference=True),
                             content.shape[:2], "adam", ADAM)
    # As the pipeline weighs them in this scaling: every layer 1.
    weights = Weights.paper(1e-3, 1.0, 0.0, layer_weights(["conv4_2"], None, 1.0),
                            layer_weights(STYLE, None, 1.0))
    init = np.random.default_rng(4).uniform(0, 255, content.shape).astype(np.float32)
    transfer.start(content, style, init, weights)
    got = transfer.evaluate()
    x, p, s = (extractor(tf.constant(a[None])) for a in (init, content, style))
    want_content = np_reference_content(x["conv4_2"].numpy(), p["conv4_2"].numpy())
    want_style = sum(np_reference_style_layer(x[n].numpy(), s[n].numpy()) for n in STYLE)
    assert got["content"] == pytest.approx(want_content, rel=1e-4)
    assert got["style"] == pytest.approx(want_style, rel=1e-4)
    assert got["total"] == pytest.approx(1e-3 * want_content + want_style, rel=1e-4)
    # The same α/β weighs style 1e3 times content in the reference code's own units.
    paper = StyleTransfer(extractor, paper_terms(["conv4_2"], STYLE), content.shape[:2], "adam",
                          ADAM)
    paper.start(content, style, init, weights)
    assert paper.evaluate()["style"] != pytest.approx(got["style"], rel=0.5)


# --- the Gram's gradient (by hand, one matmul) against its closed form in NumPy ----------------

def _random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _value_and_gradient(fn, features: np.ndarray, dtype=tf.float32):
    x = tf.constant(features, dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = tf.cast(fn(x), tf.float32)
        total = tf.reduce_sum(value)
    return value.numpy(), tape.gradient(total, x).numpy().astype(np.float64)


def _close(got: np.ndarray, want: np.ndarray, tol: float) -> None:
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * np.abs(want).max())


@pytest.mark.parametrize("dtype, tol", [(tf.float32, 1e-5), (tf.bfloat16, 2e-2)])
def test_gram_and_its_gradient_match_numpy(dtype, tol):
    """Against an upstream that is not symmetric: d/dF Σ U∘(FᵀF) = F (U + Uᵀ), per image."""
    f = _random((2, 5, 7, 6), 0)
    f = tf.cast(tf.cast(f, dtype), tf.float32).numpy()  # what the op sees, rounded to dtype
    u = _random((2, 6, 6), 1)
    grams, grad = _value_and_gradient(lambda x: losses.gram_matrix(x) * tf.cast(u, x.dtype),
                                      f, dtype)
    flat = f.reshape(2, -1, 6).astype(np.float64)
    _close(grams, np.stack([flat[b].T @ flat[b] for b in range(2)]) * u, tol)
    want = np.stack([flat[b] @ (u[b] + u[b].T) for b in range(2)]).reshape(f.shape)
    _close(grad, want, tol)


def test_style_layer_gradient_matches_closed_form():
    """d/dF of 1/(4N²M²) Σ (FᵀF − A)² = F (G − A) / (N²M²), each image its own."""
    f, s = _random((2, 6, 5, 4), 2), _random((2, 3, 8, 4), 3)
    targets = np.stack([np_gram(s[b:b + 1]) for b in range(2)]).astype(np.float32)
    value, grad = _value_and_gradient(
        lambda x: losses.style_layer_loss(x, tf.constant(targets, tf.float32)), f)
    n, m = 4, 30
    for b in range(2):
        assert value[b] == pytest.approx(np_style_layer(f[b:b + 1], s[b:b + 1]), rel=1e-5)
        flat = f[b].reshape(m, n).astype(np.float64)
        want = flat @ (flat.T @ flat - targets[b]) / (n**2 * m**2)
        _close(grad[b], want.reshape(f.shape[1:]), 1e-5)


def test_guided_style_gradient_matches_closed_form():
    """Two regions (two styles) per image, two images, soft masks: Σ_r w_r E_r, where region r's
    Gram is of F∘m_r over its mask's mean square a_r; its gradient Σ_r w_r m_r ∘ (F∘m_r) (G_r/a_r
    − A_r) / (N²M² a_r)."""
    f = _random((2, 6, 5, 4), 4)
    masks = np.random.default_rng(5).uniform(0, 1, (2, 2, 6, 5)).astype(np.float32)
    targets = np.stack([[np_gram(_random((1, 3, 3, 4), 6 + 2 * b + r)) for r in range(2)]
                        for b in range(2)]).astype(np.float32)
    weights = np.array([[0.3, 0.7], [1.0, 0.5]], np.float32)
    value, grad = _value_and_gradient(lambda x: losses.guided_style_layer_loss(
        x, tf.constant(masks), tf.constant(targets), tf.constant(weights)), f)
    n, m = 4, 30
    for b in range(2):
        total, want = 0.0, np.zeros((m, n))
        for r in range(2):
            mask = masks[b, r].reshape(m, 1).astype(np.float64)
            guided = f[b].reshape(m, n) * mask
            area = np.mean(mask**2)
            error = guided.T @ guided / area - targets[b, r]
            total += weights[b, r] * np.sum(error**2) / (4 * n**2 * m**2)
            want += weights[b, r] * mask * (guided @ error) / (n**2 * m**2 * area)
        assert value[b] == pytest.approx(total, rel=1e-5)
        _close(grad[b], want.reshape(f.shape[1:]), 1e-5)
