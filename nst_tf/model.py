"""The feature extractor: a backbone built with the configured pooling, precision and weights."""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import tensorflow as tf

from nst_tf.backbones import DEFAULT_BACKBONE, get_backbone
from nst_tf.backbones.vgg import WeightArrays


@dataclass(frozen=True)
class Reach:
    """Where a layer's responses come from: one response at position p reads the image's pixels
    [p·stride − reach, (p + 1)·stride − 1 + reach] along each axis."""

    stride: int
    reach: int


# Features, and where they sit: per layer (top, bottom, left, right) in that layer's positions,
# or None for the whole image. A function of both gives sums over positions (e.g. Gram
# matrices), which add up over the parts of an image.
Region = Mapping[str, tuple[int, int, int, int]] | None
Reducer = Callable[[Mapping[str, tf.Tensor], Region], dict[str, tf.Tensor]]


class FeatureExtractor:
    """RGB images in 0..255 -> float32 responses at the named layers."""

    def __init__(self, arrays: WeightArrays, pooling: str, layers: Sequence[str],
                 precision: str = "fp32", backbone: str = DEFAULT_BACKBONE,
                 winograd: bool = False) -> None:
        self.backbone = get_backbone(backbone)
        self.layers = tuple(dict.fromkeys(layers))
        self.model = self.backbone.build(arrays, pooling, self.layers, precision, winograd)
        # One trace for images of every size (targets, style images, tiles).
        self._forward = tf.function(
            self.__call__, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
            autograph=False)

    def __call__(self, image: tf.Tensor) -> dict[str, tf.Tensor]:
        features = self.model(self.backbone.preprocess(image))
        return {name: tf.cast(f, tf.float32) for name, f in features.items()}

    def feature_shapes(self, height: int, width: int) -> dict[str, list[int]]:
        """Each layer's response shape (1, h, w, N) for an image of height × width."""
        specs = self.model.compute_output_spec(keras.KerasTensor((1, height, width, 3)))
        return {name: list(spec.shape) for name, spec in specs.items()}

    def reduce(self, image: np.ndarray, fn: Reducer) -> dict[str, tf.Tensor]:
        """`fn` of an image's (B, H, W, 3) features over the whole image (see Region)."""
        return fn(self._forward(tf.constant(image, tf.float32)), None)

    def reaches(self) -> dict[str, Reach]:
        """Each layer's stride and reach, from the built model: what a tile around a part of
        the image must include for the part's responses to equal the whole image's."""
        stride, reach, out = 1, 0, {}
        for layer in self.model.layers[1:]:
            config = layer.get_config()
            if isinstance(layer, keras.layers.Conv2D):
                if config["padding"] != "same" or max(config["strides"]) > 1 or max(
                        config["dilation_rate"]) > 1:
                    raise ValueError(f"{layer.name}: only stride-1 'same' convolutions tile")
                reach += (config["kernel_size"][0] // 2) * stride
            elif isinstance(layer, keras.layers.AveragePooling2D | keras.layers.MaxPooling2D):
                if config["padding"] != "valid" or config["pool_size"] != config["strides"]:
                    raise ValueError(f"{layer.name}: only non-overlapping pooling tiles")
                stride *= config["strides"][0]
            if layer.name in self._outputs:
                out[self._outputs[layer.name]] = Reach(stride, reach)
        return out

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
        return {self.backbone.keras_name(name): name for name in self.layers}
