"""The VGG19 feature extractor: Keras's VGG19 rebuilt with the paper's pooling and our weights."""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from nst_tf.config import LAYER_NAMES, keras_layer_name
from nst_tf.weights import WeightArrays

# keras.applications.vgg19.preprocess_input ("caffe" mode) subtracts these from BGR pixels.
IMAGENET_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)

_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}


def build_vgg19(
    arrays: WeightArrays, pooling: str, outputs: Sequence[str], precision: str = "fp32"
) -> keras.Model:
    """Keras VGG19 (no top) with its max pooling swapped for `pooling`, cut after the deepest
    of `outputs` (paper names); returns a model mapping BGR mean-subtracted images to a dict of
    those layers' post-ReLU responses."""
    base = keras.applications.VGG19(include_top=False, weights=None, input_shape=(None, None, 3))
    policy = _POLICIES[precision]
    wanted = {keras_layer_name(name): name for name in outputs}
    deepest = max(LAYER_NAMES.index(name) for name in outputs)
    last = keras_layer_name(LAYER_NAMES[deepest])

    inputs = keras.Input(shape=(None, None, 3), name="image_bgr")
    x, features = inputs, {}
    for layer in base.layers[1:]:
        config = {**layer.get_config(), "dtype": policy}
        if isinstance(layer, keras.layers.MaxPooling2D) and pooling == "avg":
            rebuilt = keras.layers.AveragePooling2D.from_config(config)
        else:
            rebuilt = type(layer).from_config(config)
        x = rebuilt(x)
        if isinstance(layer, keras.layers.Conv2D):
            rebuilt.set_weights(list(arrays[layer.name]))
        if layer.name in wanted:
            features[wanted[layer.name]] = x
        if layer.name == last:
            break
    return keras.Model(inputs, features, name=f"vgg19_{pooling}_{precision}")


class FeatureExtractor:
    """RGB images in 0..255 -> float32 VGG19 responses at the paper's named layers."""

    def __init__(
        self, arrays: WeightArrays, pooling: str, layers: Sequence[str], precision: str = "fp32"
    ) -> None:
        self.layers = tuple(dict.fromkeys(layers))
        self.model = build_vgg19(arrays, pooling, self.layers, precision)

    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        bgr = tf.reverse(image, axis=[-1]) - IMAGENET_MEAN_BGR
        return {name: tf.cast(f, tf.float32) for name, f in self.model(bgr).items()}
