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
