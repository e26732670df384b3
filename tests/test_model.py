"""Backbones and the feature extractor: layer names, pooling swap, kept weights, cut depth,
shapes and masks from the built model."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from nst_tf.backbones import BACKBONES, get_backbone
from nst_tf.backbones.vgg import VGG16, VGG19
from nst_tf.model import FeatureExtractor, Reach


@pytest.mark.parametrize("backbone, convs", [(VGG19, 16), (VGG16, 13)])
def test_layer_names_map_to_keras(backbone, convs):
    assert backbone.weight_name("conv4_2") == "block4_conv2"
    keras_layers = [layer.name for layer in backbone.keras_model().layers[1:]]
    keras_convs = [name for name in keras_layers if "conv" in name]
    assert len(keras_convs) == convs and list(backbone.weight_names) == keras_convs
    # Every conv and the poolings between blocks (the texture model's pool1 ... pool4), in order
    assert [backbone.keras_name(n) for n in backbone.layers] == keras_layers[:-1]
    assert [n for n in backbone.layers if n.startswith("pool")] == ["pool1", "pool2", "pool3",
                                                                     "pool4"]
    with pytest.raises(KeyError, match="pool1 carries no weights"):
        backbone.weight_name("pool1")
    assert backbone.block_starts == ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def test_vgg16_has_no_fourth_conv_in_its_deep_blocks():
    assert {"conv3_4", "conv4_4", "conv5_4"} <= set(VGG19.layers)
    assert not {"conv3_4", "conv4_4", "conv5_4"} & set(VGG16.layers)
    assert set(BACKBONES) == {"vgg19", "vgg16"}
    with pytest.raises(KeyError, match="known: vgg19, vgg16"):
        get_backbone("resnet")


@pytest.mark.parametrize("pooling, kept, gone", [
    ("avg", keras.layers.AveragePooling2D, keras.layers.MaxPooling2D),
    ("max", keras.layers.MaxPooling2D, keras.layers.AveragePooling2D),
])
def test_pooling_swap_keeps_every_conv_weight(vgg_weights, pooling, kept, gone):
    model = VGG19.build(vgg_weights.arrays, pooling, ["conv5_1"], "fp32")
    pools = [layer for layer in model.layers if layer.name.endswith("_pool")]
    assert len(pools) == 4  # conv5_1 sits after the fourth pooling
    assert all(isinstance(layer, kept) and not isinstance(layer, gone) for layer in pools)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.name for c in convs] == list(VGG19.weight_names[:13])
    for conv in convs:
        kernel, bias = vgg_weights.arrays[conv.name]
        np.testing.assert_array_equal(conv.get_weights()[0], kernel)
        np.testing.assert_array_equal(conv.get_weights()[1], bias)


@pytest.mark.parametrize("pooling, pool", [("avg", tf.nn.avg_pool2d), ("max", tf.nn.max_pool2d)])
def test_pooling_layers_are_the_pooled_convs(vgg_weights, pooling, pool):
    extractor = FeatureExtractor(vgg_weights.arrays, pooling, ["conv2_2", "pool2", "pool1"])
    features = extractor(tf.random.uniform([1, 36, 44, 3], 0, 255, seed=1))
    assert extractor.model.layers[-1].name == "block2_pool"
    np.testing.assert_allclose(features["pool2"], pool(features["conv2_2"], 2, 2, "VALID"),
                               rtol=1e-6)
    assert extractor.feature_shapes(36, 44)["pool1"] == [1, 18, 22, 64]
    assert extractor.reaches()["pool2"] == Reach(stride=4, reach=6)  # conv2_2's reach


def test_model_is_cut_after_deepest_layer(vgg_weights):
    model = VGG19.build(vgg_weights.arrays, "avg", ["conv1_1", "conv3_1"], "fp32")
    names = [layer.name for layer in model.layers]
    assert names[-1] == "block3_conv1"
    assert not any(name.startswith(("block4", "block5")) for name in names)


def test_feature_shapes_come_from_the_model(vgg_weights):
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", ["conv1_1", "conv3_2", "conv5_1"])
    shapes = extractor.feature_shapes(37, 50)
    features = extractor(tf.zeros([1, 37, 50, 3]))
    assert shapes == {name: list(f.shape) for name, f in features.items()}
    assert shapes["conv5_1"] == [1, 2, 3, 512]  # four poolings, each flooring: 37 -> 2, 50 -> 3


def test_masks_go_through_the_models_pooling(vgg_weights):
    extractor = FeatureExtractor(vgg_weights.arrays, "max", ["conv1_1", "conv2_1", "conv4_2"])
    mask = np.random.default_rng(0).uniform(0, 1, (37, 50)).astype(np.float32)
    pooled = extractor.downsample(mask)
    np.testing.assert_array_equal(pooled["conv1_1"], mask)
    # A share of area: 2x2 means (not maxima, whatever the pooling), flooring odd sizes.
    np.testing.assert_allclose(pooled["conv2_1"],
                               mask[:36, :50].reshape(18, 2, 25, 2).mean(axis=(1, 3)), rtol=1e-6)
    shapes = extractor.feature_shapes(37, 50)
    assert all(pooled[n].shape == tuple(shapes[n][1:3]) for n in pooled)


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
