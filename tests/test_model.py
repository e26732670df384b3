"""The VGG19 rebuild: pooling swap, kept weights, cut depth, paper names."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nst_tf.config import LAYER_NAMES, keras_layer_name
from nst_tf.model import FeatureExtractor, build_vgg19


def test_layer_names_map_to_keras():
    assert len(LAYER_NAMES) == 16
    assert keras_layer_name("conv4_2") == "block4_conv2"
    base = keras.applications.VGG19(include_top=False, weights=None)
    convs = [layer.name for layer in base.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [keras_layer_name(n) for n in LAYER_NAMES] == convs


@pytest.mark.parametrize("pooling, kept, gone", [
    ("avg", keras.layers.AveragePooling2D, keras.layers.MaxPooling2D),
    ("max", keras.layers.MaxPooling2D, keras.layers.AveragePooling2D),
])
def test_pooling_swap_keeps_every_conv_weight(vgg_weights, pooling, kept, gone):
    model = build_vgg19(vgg_weights.arrays, pooling, ["conv5_1"])
    pools = [layer for layer in model.layers if layer.name.endswith("_pool")]
    assert len(pools) == 4  # conv5_1 sits after the fourth pooling
    assert all(isinstance(layer, kept) and not isinstance(layer, gone) for layer in pools)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs] == [keras_layer_name(n) for n in LAYER_NAMES[:13]]
    for conv in convs:
        kernel, bias = vgg_weights.arrays[conv.name]
        np.testing.assert_array_equal(conv.get_weights()[0], kernel)
        np.testing.assert_array_equal(conv.get_weights()[1], bias)


def test_model_is_cut_after_deepest_layer(vgg_weights):
    model = build_vgg19(vgg_weights.arrays, "avg", ["conv1_1", "conv3_1"])
    names = [layer.name for layer in model.layers]
    assert names[-1] == "block3_conv1"
    assert not any(name.startswith(("block4", "block5")) for name in names)


def test_avg_and_max_features_differ(vgg_weights, images_dir):
    from nst_tf.images import fit_long_side, read_rgb, to_array

    image = tf.constant(to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 64))[None])
    layers = ["conv1_1", "conv2_1", "conv4_2"]
    avg = FeatureExtractor(vgg_weights.arrays, "avg", layers)(image)
    mx = FeatureExtractor(vgg_weights.arrays, "max", layers)(image)
    assert set(avg) == set(layers)
    # Before any pooling both nets compute the same; after it they must not.
    np.testing.assert_array_equal(avg["conv1_1"].numpy(), mx["conv1_1"].numpy())
    for name in ("conv2_1", "conv4_2"):
        a, m = avg[name].numpy(), mx[name].numpy()
        assert a.shape == m.shape
        assert np.abs(a - m).mean() > 0.05 * np.abs(m).mean(), name
