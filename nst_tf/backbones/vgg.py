"""VGG16 and VGG19 (Simonyan & Zisserman 2015) as Keras ships them, with the paper's pooling.

Declarations only at import: TensorFlow and Keras load when a model is built.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

WeightArrays = dict[str, tuple[np.ndarray, np.ndarray]]
_POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16"}
_KERAS_WEIGHTS = "https://storage.googleapis.com/tensorflow/keras-applications"
# model.winograd: F(4×4, 3×3) for the convs with this many filters or more (blocks 4 and 5).
# Its transforms cost a pass over memory per layer whatever the channels, its savings grow with
# them: on an AVX2 Zen 3 it won from 512 channels and lost at 256 (docs/STEP.md).
WINOGRAD_MIN_FILTERS = 512
WINOGRAD_TILE = 4


@dataclass(frozen=True)
class ImagenetFile:
    """Keras's official notop weights file, as keras.applications fetches it."""

    url: str
    fname: str
    md5: str


@dataclass(frozen=True)
class Footprint:
    """What a network costs in memory, as the memory check (nst_tf.memory) counts it before
    anything is built."""

    weight_bytes: float  # its weights, loaded
    # Per pixel of the image: the compiled step's activations and gradients through the deepest
    # layer a run may read.
    step_bytes_per_pixel: float
    tile_margin: int  # px a tile's crop adds to its side: that layer's reach, on its grid


class Backbone(Protocol):
    """What the rest of the package may know of a network."""

    name: str
    imagenet: ImagenetFile
    footprint: Footprint

    @property
    def min_size(self) -> int:
        """The fewest px an image's side may have: its deepest layer's stride, so that every
        layer keeps at least one position."""
        ...

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers losses may use, in network order, by the names configs use (e.g. conv4_2,
        pool1)."""
        ...

    @property
    def weight_names(self) -> tuple[str, ...]:
        """The layers that carry weights, in order, by the names weight files use."""
        ...

    @property
    def block_starts(self) -> tuple[str, ...]:
        """The first layer after each pooling (and the first): the paper's style layers."""
        ...

    @property
    def mean_rgb(self) -> np.ndarray:
        """The training data's mean pixel, 0..255: where a noise start is centred."""
        ...

    def build(self, arrays: WeightArrays, pooling: str, outputs: Sequence[str],
              precision: str, winograd: bool = False) -> "keras.Model":
        """A model from preprocessed images to a dict of `outputs`' responses, cut after the
        deepest of them; `pooling` is avg or max; `winograd`: the widest 3×3 convs by
        Winograd's algorithm in fp32 (frozen weights; ignored in bf16)."""
        ...

    def preprocess(self, image: "tf.Tensor") -> "tf.Tensor":
        """RGB 0..255 -> what `build`'s model takes."""
        ...

    def weight_name(self, layer: str) -> str:
        """The weight files' name of one of `layers` that carries weights."""
        ...

    def keras_name(self, layer: str) -> str:
        """The name of one of `layers` in the model `build` makes."""
        ...

    def geometry(self, layer: str) -> tuple[int, int]:
        """One of `layers`' stride (px of the image per position) and channels, known before
        anything is built: what the memory check counts of loss terms that keep features."""
        ...

    def keras_model(self) -> "keras.Model":
        """The network as weight files fill it (Keras's layer names), without weights."""
        ...


@dataclass(frozen=True)
class VGG:
    """A VGG network: blocks of 3×3 convs (each followed by ReLU), a 2×2 pooling after each."""

    name: str
    convs_per_block: tuple[int, ...]
    application: str  # the keras.applications constructor
    imagenet: ImagenetFile
    footprint: Footprint
    # keras.applications.vgg*.preprocess_input ("caffe" mode) subtracts this from BGR pixels.
    mean_bgr: tuple[float, float, float] = (103.939, 116.779, 123.68)
    widths: tuple[int, ...] = (64, 128, 256, 512, 512)  # each block's channels

    @cached_property
    def _blocks(self) -> tuple[tuple[int, int], ...]:
        return tuple((block, conv) for block, convs in enumerate(self.convs_per_block, 1)
                     for conv in range(1, convs + 1))

    @property
    def layers(self) -> tuple[str, ...]:
        # The paper's names: the I-th conv of block B (post-ReLU) is convB_I, the pooling after
        # it poolB (Gatys et al.'s texture model reads pool1 ... pool4). The last block's
        # pooling is not one: it feeds only the classifier, and its stride would double
        # `min_size`.
        return tuple(self._keras_name)

    @cached_property
    def _keras_name(self) -> Mapping[str, str]:
        names = {}
        for block, conv in self._blocks:
            names[f"conv{block}_{conv}"] = f"block{block}_conv{conv}"
            if conv == self.convs_per_block[block - 1] and block < len(self.convs_per_block):
                names[f"pool{block}"] = f"block{block}_pool"
        return names

    @property
    def weight_names(self) -> tuple[str, ...]:
        return tuple(f"block{block}_conv{conv}" for block, conv in self._blocks)

    @property
    def block_starts(self) -> tuple[str, ...]:
        return tuple(f"conv{block}_1" for block in range(1, len(self.convs_per_block) + 1))

    @property
    def min_size(self) -> int:
        # The model is cut after its deepest output, in the last block: behind all poolings but
        # the last.
        return 2 ** (len(self.convs_per_block) - 1)


    @property
    def mean_rgb(self) -> np.ndarray:
        return np.array(self.mean_bgr[::-1], np.float32)

    def keras_model(self) -> "keras.Model":
        import keras

        return getattr(keras.applications, self.application)(
            include_top=False, weights=None, input_shape=(None, None, 3))

    def build(self, arrays: WeightArrays, pooling: str, outputs: Sequence[str],
              precision: str, winograd: bool = False) -> "keras.Model":
        import keras

        base = self.keras_model()
        policy = _POLICIES[precision]
        wanted = {self.keras_name(name): name for name in outputs}
        last = self.keras_name(max(outputs, key=self.layers.index))
        inputs = keras.Input(shape=(None, None, 3), name="image_bgr")
        x, features = inputs, {}
        for layer in base.layers[1:]:
            config = {**layer.get_config(), "dtype": policy}
            fast = (winograd and precision == "fp32" and isinstance(layer, keras.layers.Conv2D)
                    and layer.filters >= WINOGRAD_MIN_FILTERS)
            if isinstance(layer, keras.layers.MaxPooling2D) and pooling == "avg":
                rebuilt = keras.layers.AveragePooling2D.from_config(config)
            elif fast:
                from nst_tf.backbones.winograd import WinogradConv2D

                rebuilt = WinogradConv2D(WINOGRAD_TILE, **config)
            else:
                rebuilt = type(layer).from_config(config)
            x = rebuilt(x)
            if isinstance(layer, keras.layers.Conv2D):
                rebuilt.set_weights(list(arrays[layer.name]))
            if fast:
                rebuilt.freeze()
            if layer.name in wanted:
                features[wanted[layer.name]] = x
            if layer.name == last:
                break
        return keras.Model(inputs, features, name=f"{self.name}_{pooling}_{precision}")

    def preprocess(self, image: "tf.Tensor") -> "tf.Tensor":
        import tensorflow as tf

        return tf.reverse(image, axis=[-1]) - np.array(self.mean_bgr, np.float32)

    def weight_name(self, layer: str) -> str:
        """The weight file's name of a conv in `layers` (conv4_2 -> block4_conv2)."""
        if not layer.startswith("conv"):
            raise KeyError(f"{layer} carries no weights")
        return self._keras_name[layer]

    def keras_name(self, layer: str) -> str:
        """The built model's name of a layer in `layers` (pool1 -> block1_pool)."""
        return self._keras_name[layer]

    def geometry(self, layer: str) -> tuple[int, int]:
        block = int(self._keras_name[layer].split("_")[0].removeprefix("block"))
        pooled = block if layer.startswith("pool") else block - 1  # poolings before it
        return 2**pooled, self.widths[block - 1]


# Measured in fp32 (scripts/bench.py's memory section, docs/PERFORMANCE.md; bf16's slope is a
# few percent lower). VGG16 is VGG19 less a conv in each deep block: needing no more of any, it
# shares these as bounds.
_VGG19_FOOTPRINT = Footprint(
    weight_bytes=80_097_536,  # 20,024,384 float32 parameters
    # Through conv5_1; pool1 ... pool4 sit before it, so it bounds them too.
    step_bytes_per_pixel=2300,
    # conv5_1's reach, 70 px, on its 16 px grid: 80 px each side (pool4's: 54 px, 64 each side)
    tile_margin=160,
)

VGG19 = VGG(
    name="vgg19",
    convs_per_block=(2, 2, 4, 4, 4),
    application="VGG19",
    imagenet=ImagenetFile(
        url=f"{_KERAS_WEIGHTS}/vgg19/vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        fname="vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="253f8cb515780f3b799900260a226db6",
    ),
    footprint=_VGG19_FOOTPRINT,
)

VGG16 = VGG(
    name="vgg16",
    convs_per_block=(2, 2, 3, 3, 3),
    application="VGG16",
    imagenet=ImagenetFile(
        url=f"{_KERAS_WEIGHTS}/vgg16/vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        fname="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
        md5="6d6bbae143d832006294945121d1f1fc",
    ),
    footprint=_VGG19_FOOTPRINT,
)
