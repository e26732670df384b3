"""The feature extractor: a backbone built with the configured pooling, precision and weights."""

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from nst_tf.backbones import DEFAULT_BACKBONE, get_backbone
from nst_tf.backbones.vgg import WeightArrays


class FeatureExtractor:
    """RGB images in 0..255 -> float32 responses at the named layers."""

    def __init__(self, arrays: WeightArrays, pooling: str, layers: Sequence[str],
                 precision: str = "fp32", backbone: str = DEFAULT_BACKBONE) -> None:
        self.backbone = get_backbone(backbone)
        self.layers = tuple(dict.fromkeys(layers))
        self.model = self.backbone.build(arrays, pooling, self.layers, precision)

    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        features = self.model(self.backbone.preprocess(image))
        return {name: tf.cast(f, tf.float32) for name, f in features.items()}

    def feature_shapes(self, height: int, width: int) -> dict[str, list[int]]:
        """Each layer's response shape (1, h, w, N) for an image of height × width."""
        specs = self.model.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        return {name: list(spec.shape) for name, spec in specs.items()}

    def downsample(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """A content-sized (H, W) mask at each layer's resolution, through the model's own
        pooling geometry; averaged whatever the pooling, since a mask is a share of area."""
        x = tf.constant(mask[None, :, :, None].astype(np.float32))
        out = {}
        for layer in self.model.layers[1:]:
            if isinstance(layer, keras.layers.AveragePooling2D | keras.layers.MaxPooling2D):
                config = {k: v for k, v in layer.get_config().items() if k != "dtype"}
                x = keras.layers.AveragePooling2D.from_config({**config, "name": None})(x)
            if layer.name in self._outputs:
                out[self._outputs[layer.name]] = x.numpy()[0, :, :, 0]
        return out

    @property
    def _outputs(self) -> dict[str, str]:
        return {self.backbone.weight_name(name): name for name in self.layers}
