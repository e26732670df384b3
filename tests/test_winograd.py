"""Winograd's 3×3 convolutions (model.winograd): equal to the direct convolution forward and in
the input's gradient within fp32 rounding, and used only where the setting puts them."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nst_tf.backbones.vgg import VGG19, WINOGRAD_MIN_FILTERS
from nst_tf.backbones.winograd import WinogradConv2D, frozen_conv3x3
from nst_tf.model import FeatureExtractor

# Largest error over the largest value: F(2,3)'s transforms are exact in binary, F(4,3)'s
# (points ±2, 1/6, 1/24) lose about two digits, as in the literature.
BOUND = {2: 2e-6, 4: 2e-5}


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("shape", [(2, 7, 9, 5, 6), (1, 1, 2, 2, 3), (1, 13, 6, 16, 8)])
def test_equals_the_direct_convolution_and_its_gradient(m, shape):
    batch, height, width, c_in, c_out = shape
    rng = np.random.default_rng(sum(shape))
    x = tf.constant(rng.standard_normal((batch, height, width, c_in), np.float32))
    kernel = rng.standard_normal((3, 3, c_in, c_out), np.float32)
    upstream = tf.constant(rng.standard_normal((batch, height, width, c_out), np.float32))
    conv = frozen_conv3x3(kernel, m)
    results = []
    for fn in (lambda x: tf.nn.conv2d(x, kernel, 1, "SAME"), conv):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
            total = tf.reduce_sum(y * upstream)
        results.append((y.numpy(), tape.gradient(total, x).numpy()))
    (direct, direct_grad), (fast, fast_grad) = results
    assert fast.shape == direct.shape
    assert np.abs(fast - direct).max() <= BOUND[m] * np.abs(direct).max()
    assert np.abs(fast_grad - direct_grad).max() <= BOUND[m] * np.abs(direct_grad).max()


def test_refuses_other_convolutions():
    with pytest.raises(ValueError, match="3×3, stride-1 'same'"):
        WinogradConv2D(4, filters=8, kernel_size=3, strides=2, padding="same")
    with pytest.raises(ValueError, match="3×3, stride-1 'same'"):
        WinogradConv2D(4, filters=8, kernel_size=5, padding="same")


def fast_and_wide(model: keras.Model) -> tuple[set[str], set[str]]:
    """The model's convs by Winograd, and those with the filters that qualify."""
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    return ({layer.name for layer in convs if isinstance(layer, WinogradConv2D)},
            {layer.name for layer in convs if layer.filters >= WINOGRAD_MIN_FILTERS})


def test_never_in_bf16(vgg_weights):
    model = VGG19.build(vgg_weights.arrays, "avg", ["conv5_1"], "bf16", winograd=True)
    fast, wide = fast_and_wide(model)
    assert not fast and wide


def test_widest_convs_only_and_features_and_gradient_match(vgg_weights):
    layers = ["conv4_2", "conv5_1"]
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (1, 40, 36, 3)), tf.float32)
    results = []
    for winograd in (False, True):
        extractor = FeatureExtractor(vgg_weights.arrays, "avg", layers, winograd=winograd)
        fast, wide = fast_and_wide(extractor.model)
        assert wide == {f"block4_conv{i}" for i in range(1, 5)} | {"block5_conv1"}
        assert fast == (wide if winograd else set())
        with tf.GradientTape() as tape:
            tape.watch(image)
            features = extractor(image)
            total = tf.add_n([tf.reduce_sum(f ** 2) for f in features.values()])
        results.append(({k: f.numpy() for k, f in features.items()},
                        tape.gradient(total, image).numpy()))
    (direct, direct_grad), (fast, fast_grad) = results
    for name in layers:
        np.testing.assert_allclose(fast[name], direct[name], rtol=0,
                                   atol=1e-4 * np.abs(direct[name]).max())
    np.testing.assert_allclose(fast_grad, direct_grad, rtol=0,
                               atol=1e-4 * np.abs(direct_grad).max())
