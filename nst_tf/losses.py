"""The paper's losses (Gatys, Ecker & Bethge 2015, eqs. 1, 3-5), and the objective's terms.

Features are float32 tensors of shape (B, H, W, N): B images (a batch of runs), N filters,
M = H·W positions. Every loss is per image, shape (B,): members of a batch never mix. Each term
of the objective is a LossTerm: adding one is a subclass and its weight in the config
(docs/ARCHITECTURE.md).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from nst_tf.model import FeatureExtractor

_EACH = [1, 2, 3]  # every axis but the batch's


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """G_ij = Σ_k F_ik F_jk per image, (B, N, N)."""
    shape = tf.shape(features)
    flat = tf.reshape(features, [shape[0], -1, shape[-1]])
    return tf.matmul(flat, flat, transpose_a=True)


def content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """½ Σ (F − P)²."""
    return 0.5 * tf.reduce_sum(tf.square(features - target), axis=_EACH)


def style_layer_loss(features: tf.Tensor, target_gram: tf.Tensor) -> tf.Tensor:
    """E_l = 1/(4 N² M²) Σ (G − A)²."""
    shape = tf.shape(features)
    n = tf.cast(shape[-1], tf.float32)
    m = tf.cast(shape[1] * shape[2], tf.float32)
    # Scaling before squaring keeps float32 far from overflow at large M.
    return tf.reduce_sum(tf.square((gram_matrix(features) - target_gram) / (2.0 * n * m)),
                         axis=[1, 2])


# The first author's reference code (leongatys/PytorchNeuralStyleTransfer), in whose scaling the
# printed α/β give the printed balance on the normalised net: Grams divided by M, mean squared
# errors, each style layer weighted 1/N² (its 1e3/N² against content weight 1 is α/β = 1e-3).


def reference_gram(features: tf.Tensor) -> tf.Tensor:
    """G / M."""
    shape = tf.shape(features)
    return gram_matrix(features) / tf.cast(shape[1] * shape[2], tf.float32)


def reference_content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """mean (F − P)²."""
    return tf.reduce_mean(tf.square(features - target), axis=_EACH)


def reference_style_layer_loss(features: tf.Tensor, target_gram: tf.Tensor) -> tf.Tensor:
    """1/N² · mean over the N×N entries of (G/M − A/M_style)²; `target_gram` is A/M_style."""
    n = tf.cast(tf.shape(features)[-1], tf.float32)
    return tf.reduce_mean(tf.square(reference_gram(features) - target_gram), axis=[1, 2]) / (n * n)


def total_variation(image: tf.Tensor) -> tf.Tensor:
    """Σ of squared differences between neighbouring pixels (neural-style's TV loss)."""
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    return tf.reduce_sum(tf.square(dy), axis=_EACH) + tf.reduce_sum(tf.square(dx), axis=_EACH)


def guided_style_layer_loss(
    features: tf.Tensor, masks: tf.Tensor, target_grams: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
    """Σ_r w_r E_l over regions (Gatys et al. 2017, *Controlling Perceptual Factors*).

    masks: (B, R, H, W) guidance channels at this layer's resolution; target_grams:
    (B, R, N, N); weights: (B, R). Each region's Gram is divided by the mean squared mask, so a
    region compares with a whole style image's Gram at the scale of the full image (an all-ones
    mask gives E_l exactly).
    """
    shape = tf.shape(features)
    n = tf.cast(shape[-1], tf.float32)
    m = tf.cast(shape[1] * shape[2], tf.float32)
    guided = features[:, None] * masks[..., None]  # (B, R, H, W, N)
    flat = tf.reshape(guided, [shape[0], tf.shape(masks)[1], -1, shape[-1]])
    area = tf.reduce_mean(tf.square(masks), axis=[2, 3])[..., None, None]
    grams = tf.matmul(flat, flat, transpose_a=True) / tf.maximum(area, 1e-12)
    per_region = tf.reduce_sum(tf.square((grams - target_grams) / (2.0 * n * m)), axis=[2, 3])
    return tf.reduce_sum(weights * per_region, axis=1)


# --- the objective's terms -------------------------------------------------------------------


def weights_by_layer(layers: Sequence[str], weights: Sequence[float] | None = None,
                  each: float | None = None) -> dict[str, float]:
    """Per-layer weights, the one default rule: as given; else `each` for every layer; else
    equal, summing to 1 (the paper's w_l = 1/L)."""
    if weights is None:
        weights = [each or 1.0 / max(len(layers), 1)] * len(layers)
    return dict(zip(layers, weights, strict=True))


@dataclass(frozen=True)
class Targets:
    """What the terms take their targets from, all at the run's size: RGB 0..255 images."""

    content: np.ndarray  # (H, W, 3)
    styles: Sequence[tuple[np.ndarray, float]]  # (image, blend weight); images of any size
    masks: Sequence[np.ndarray] = ()  # (H, W) in 0..1, one per style: where each one goes
    # Video: earlier stylised frames warped into this one, each with its per-pixel weight
    # ((H, W, 3) RGB 0..255, (H, W) in 0..1), nearest first.
    previous: Sequence[tuple[np.ndarray, np.ndarray]] = ()


class LossTerm:
    """One term of the objective: `name` is its column in losses.csv, `layers` the features it
    reads. `build` makes its state once per compiled step, with a row per member of the batch;
    `start` sets one member's targets (no retrace); `value` is traced into the step and gives
    each member's value, shape (B,)."""

    name: str = ""

    def __init__(self, layers: Sequence[str] = ()) -> None:
        self.layers = tuple(layers)

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        """Allocate variables for `batch` images of `shape` (height, width)."""

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        """Set member `member`'s targets and per-layer weights for a new run."""

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        raise NotImplementedError


class LayerTerm(LossTerm):
    """A term summed over its layers with per-layer weights: Σ_l w_l E_l."""

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        self.extractor = extractor
        self.shapes = extractor.feature_shapes(*shape)
        self.layer_weights = tf.Variable(tf.zeros([batch, len(self.layers)]),
                                         name=f"w_{self.name}")

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        given = {**weights_by_layer(self.layers), **layer_weights}
        self.layer_weights[member].assign([given[name] for name in self.layers])

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        if not self.layers:
            return tf.zeros(tf.shape(image)[:1])
        per_layer = tf.stack([self.layer_value(features[name], name) for name in self.layers],
                             axis=1)
        return tf.reduce_sum(self.layer_weights * per_layer, axis=1)

    def layer_value(self, features: tf.Tensor, name: str) -> tf.Tensor:
        raise NotImplementedError

    def _variable(self, shape: Sequence[int], name: str) -> tf.Variable:
        return tf.Variable(tf.zeros(shape), name=name)


class ContentLoss(LayerTerm):
    """The content loss against the content image's features: the paper's, or with
    `reference=True` the authors' code's scaling."""

    name = "content"

    def __init__(self, layers: Sequence[str] = (), reference: bool = False) -> None:
        super().__init__(layers)
        self.loss = reference_content_loss if reference else content_loss

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.targets = {name: self._variable([batch, *self.shapes[name][1:]], f"P_{name}")
                        for name in self.layers}
        self._features = tf.function(extractor.__call__)

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        features = self._features(tf.constant(targets.content[None]))
        for name in self.layers:
            self.targets[name][member].assign(features[name][0])

    def layer_value(self, features: tf.Tensor, name: str) -> tf.Tensor:
        return self.loss(features, self.targets[name])


class StyleLoss(LayerTerm):
    """The style loss against the Gram matrices of the styles, blended by weight: the paper's,
    or with `reference=True` the authors' code's scaling."""

    name = "style"

    def __init__(self, layers: Sequence[str] = (), reference: bool = False) -> None:
        super().__init__(layers)
        self.gram = reference_gram if reference else gram_matrix
        self.loss = reference_style_layer_loss if reference else style_layer_loss

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.targets = {name: self._variable([batch, *self._target_shape(name)], f"A_{name}")
                        for name in self.layers}
        # Style images come in any size: one trace for all of them.
        self._grams = tf.function(
            self._style_grams, input_signature=[tf.TensorSpec([1, None, None, 3], tf.float32)]
        )

    def _target_shape(self, name: str) -> list[int]:
        return [self.shapes[name][-1]] * 2

    def _style_grams(self, style: tf.Tensor) -> dict[str, tf.Tensor]:
        features = self.extractor(style)
        return {name: self.gram(features[name])[0] for name in self.layers}

    def grams(self, targets: Targets) -> list[tuple[dict[str, tf.Tensor], float]]:
        """Each style's Grams, with its blend weight normalised to sum 1."""
        total = sum(weight for _, weight in targets.styles)
        return [(self._grams(tf.constant(image[None])), weight / total)
                for image, weight in targets.styles]

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        grams = self.grams(targets)
        for name in self.layers:
            self.targets[name][member].assign(tf.add_n([g[name] * weight for g, weight in grams]))

    def layer_value(self, features: tf.Tensor, name: str) -> tf.Tensor:
        return self.loss(features, self.targets[name])


class GuidedStyleLoss(StyleLoss):
    """Spatial control: one style per masked region, each against its own Grams."""

    def __init__(self, layers: Sequence[str], regions: int) -> None:
        super().__init__(layers)
        self.regions = regions

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.masks = {
            name: self._variable([batch, self.regions, *self.shapes[name][1:3]], f"mask_{name}")
            for name in self.layers
        }
        self.region_weights = self._variable([batch, self.regions], "region_weights")

    def _target_shape(self, name: str) -> list[int]:
        return [self.regions, *super()._target_shape(name)]

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        LayerTerm.start(self, member, targets, layer_weights)
        if len(targets.masks) != self.regions or len(targets.styles) != self.regions:
            raise ValueError(f"{self.regions} regions need as many masks and styles")
        grams = self.grams(targets)
        pooled = [self.extractor.downsample(mask) for mask in targets.masks]
        for name in self.layers:
            self.targets[name][member].assign(tf.stack([g[name] for g, _ in grams]))
            self.masks[name][member].assign(np.stack([p[name] for p in pooled]))
        self.region_weights[member].assign([weight for _, weight in grams])

    def layer_value(self, features: tf.Tensor, name: str) -> tf.Tensor:
        return guided_style_layer_loss(
            features, self.masks[name], self.targets[name], self.region_weights
        )


class TotalVariation(LossTerm):
    """Smoothness of the image itself (not in the paper)."""

    name = "tv"

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        return total_variation(image)


class TemporalLoss(LossTerm):
    """Ruder, Dosovitskiy & Brox (2016): Σ_j 1/D Σ c_j (x − ω_j)², the image against each
    earlier stylised frame ω_j warped into this one, where its weight c_j says the flow is
    reliable; D = H·W·3. With `like_content` (the paper's scaling) it is multiplied by ½·N·M
    of that content layer, so that its weight relates to α as Ruder's γ to his α, whose content
    loss is a mean."""

    name = "temporal"

    def __init__(self, references: int, like_content: str | None = None) -> None:
        super().__init__()
        self.references, self.like_content = references, like_content

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        self.scale = 1.0
        if self.like_content:
            _, height, width, filters = extractor.feature_shapes(*shape)[self.like_content]
            self.scale = 0.5 * height * width * filters
        self.warped = tf.Variable(tf.zeros([batch, self.references, *shape, 3]), name="warped")
        self.weights = tf.Variable(tf.zeros([batch, self.references, *shape]), name="reliable")

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        if len(targets.previous) > self.references:
            raise ValueError(f"{self.references} earlier frames at most, got "
                             f"{len(targets.previous)}")
        warped = np.zeros(self.warped.shape[1:], np.float32)
        weights = np.zeros(self.weights.shape[1:], np.float32)  # none yet: the first frame
        for j, (image, reliable) in enumerate(targets.previous):
            warped[j], weights[j] = image, reliable
        self.warped[member].assign(warped)
        self.weights[member].assign(weights)

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        error = tf.square(image[:, None] - self.warped) * self.weights[..., None]
        return self.scale * tf.reduce_sum(tf.reduce_mean(error, axis=[2, 3, 4]), axis=1)


# Terms beyond the paper's, by name: how to build each one from the run's settings (a RunConfig).
# A run uses those named in its `terms` config, weighted by it.
EXTRA_TERMS: dict[str, Callable[[Any], LossTerm]] = {}


def paper_terms(content_layers: Sequence[str], style_layers: Sequence[str], regions: int = 0,
                reference: bool = False) -> list[LossTerm]:
    """The objective α·content + β·style (+ TV): guided style with `regions` masks; the
    authors' code's scaling with `reference` (not with masks)."""
    if regions and reference:
        raise ValueError("guided style has the paper's scaling only")
    style = (GuidedStyleLoss(style_layers, regions) if regions
             else StyleLoss(style_layers, reference))
    return [ContentLoss(content_layers, reference), style, TotalVariation()]
