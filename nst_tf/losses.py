"""The paper's losses (Gatys, Ecker & Bethge 2015, eqs. 1, 3-5), and the objective's terms.

Features are float32 tensors of shape (B, H, W, N): B images (a batch of runs), N filters,
M = H·W positions. Every loss is per image, shape (B,): members of a batch never mix. Each term
is a LossTerm: adding one is a subclass and its weight in the config (docs/ARCHITECTURE.md).
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from nst_tf.backbones import Backbone
    from nst_tf.model import FeatureExtractor, Region

_EACH = [1, 2, 3]  # every axis but the batch's


@tf.custom_gradient
def _gram(flat: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """FᵀF over the last two axes; its gradient F (dG + dGᵀ) in one matmul (autodiff's: two)."""
    return tf.matmul(flat, flat, transpose_a=True), lambda up: tf.matmul(
        flat, up + tf.linalg.matrix_transpose(up))


def gram_matrix(features: tf.Tensor) -> tf.Tensor:
    """G_ij = Σ_k F_ik F_jk over the positions k: (..., N, N) of features (..., H, W, N)."""
    shape = tf.shape(features)
    return _gram(tf.reshape(features, tf.concat([shape[:-3], [-1, shape[-1]]], 0)))


def content_loss(features: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
    """½ Σ (F − P)²."""
    return 0.5 * tf.reduce_sum(tf.square(features - target), axis=_EACH)


def gram_loss(gram: tf.Tensor, target_gram: tf.Tensor, positions: tf.Tensor | float) -> tf.Tensor:
    """E_l = 1/(4 N² M²) Σ (G − A)², with M = `positions`."""
    n = tf.cast(tf.shape(gram)[-1], tf.float32)
    # Scaling before squaring keeps float32 far from overflow at large M.
    return tf.reduce_sum(tf.square((gram - target_gram) / (2.0 * n * positions)), axis=[-2, -1])


def style_layer_loss(features: tf.Tensor, target_gram: tf.Tensor) -> tf.Tensor:
    """E_l of one layer's features."""
    return gram_loss(gram_matrix(features), target_gram, _positions(features))


# The first author's code (leongatys/PytorchNeuralStyleTransfer), where the printed α/β balance
# on the normalised net: Grams over M, mean squared errors, style layers 1/N² (1e3/N²: 1e-3).
def reference_gram_loss(gram: tf.Tensor, target_gram: tf.Tensor, positions: tf.Tensor | float
                        ) -> tf.Tensor:
    """1/N² · mean over the N×N entries of (G/M − A/M_style)²; `target_gram` is A/M_style."""
    n = tf.cast(tf.shape(gram)[-1], tf.float32)
    return tf.reduce_mean(tf.square(gram / positions - target_gram), axis=[-2, -1]) / (n * n)


def total_variation(image: tf.Tensor) -> tf.Tensor:
    """Σ of squared differences between neighbouring pixels (neural-style's TV loss)."""
    dy = image[:, 1:, :, :] - image[:, :-1, :, :]
    dx = image[:, :, 1:, :] - image[:, :, :-1, :]
    return tf.reduce_sum(tf.square(dy), axis=_EACH) + tf.reduce_sum(tf.square(dx), axis=_EACH)


def guided_grams(features: tf.Tensor, masks: tf.Tensor) -> tf.Tensor:
    """Each region's Gram of the masked features, (B, R, N, N); masks (B, R, H, W)."""
    return gram_matrix(features[:, None] * masks[..., None])  # of (B, R, H, W, N)


def guided_gram_loss(grams: tf.Tensor, area: tf.Tensor, target_grams: tf.Tensor,
                     weights: tf.Tensor, positions: tf.Tensor | float) -> tf.Tensor:
    """Σ_r w_r E_l over regions; each region's Gram divided by its mask's mean square `area`
    (B, R), so that a region compares with a whole style image's Gram at the scale of the full
    image (an all-ones mask gives E_l exactly)."""
    scaled = grams / tf.maximum(area, 1e-12)[..., None, None]
    return tf.reduce_sum(weights * gram_loss(scaled, target_grams, positions), axis=1)


def guided_style_layer_loss(
    features: tf.Tensor, masks: tf.Tensor, target_grams: tf.Tensor, weights: tf.Tensor
) -> tf.Tensor:
    """Σ_r w_r E_l over regions (Gatys et al. 2017, *Controlling Perceptual Factors*).

    masks: (B, R, H, W) guidance channels at this layer's resolution; target_grams:
    (B, R, N, N); weights: (B, R).
    """
    area = tf.reduce_mean(tf.square(masks), axis=[2, 3])
    return guided_gram_loss(guided_grams(features, masks), area, target_grams, weights,
                            _positions(features))


def _positions(features: tf.Tensor) -> tf.Tensor:
    shape = tf.shape(features)
    return tf.cast(shape[1] * shape[2], tf.float32)


def _at(variable: tf.Variable, where: tuple[int, int, int, int] | None, axis: int = 1
        ) -> tf.Tensor:
    """A per-position target, its rows at `axis`, at a part of the layer (see model.Region)."""
    if where is None:
        return variable
    top, bottom, left, right = where
    return variable[(slice(None),) * axis + (slice(top, bottom), slice(left, right))]


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
    each member's value, shape (B,).

    A term that reads features states its value as `combine` of sums over positions
    (`statistics`, e.g. Gram matrices), which add up over the parts of an image: exact in tiles
    (nst_tf.tiling). One that overrides `value` runs on whole images only, unless it reads none."""

    name: str = ""

    def __init__(self, layers: Sequence[str] = ()) -> None:
        self.layers = tuple(layers)

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        """Allocate variables for `batch` images of `shape` (height, width)."""

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        """Set member `member`'s targets and per-layer weights for a new run."""

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        return self.combine(self.statistics(features, None), image)

    def statistics(self, features: Mapping[str, tf.Tensor], region: "Region") -> dict[str, Any]:
        """Sums over the positions of `features`, which sit at `region` of the image."""
        return {}

    def combine(self, statistics: Mapping[str, Any], image: tf.Tensor) -> tf.Tensor:
        """The value from the whole image's statistics (and the image itself)."""
        raise NotImplementedError

    def state_bytes(self, backbone: "Backbone", content: tuple[int, int],
                    styles: Sequence[tuple[int, int]]) -> float:
        """Bytes per member beyond the backbone's `Footprint` (its targets, its step's tensors)
        for a content and styles of (width, height) px, before anything is built."""
        return 0.0


class LayerTerm(LossTerm):
    """A term summed over its layers with per-layer weights: Σ_l w_l E_l, each E_l a function
    of a sum over the layer's positions."""

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        self.extractor = extractor
        self.shapes = extractor.feature_shapes(*shape)
        self.layer_weights = tf.Variable(tf.zeros([batch, len(self.layers)]),
                                         name=f"w_{self.name}")

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        given = {**weights_by_layer(self.layers), **layer_weights}
        self.layer_weights[member].assign([given[name] for name in self.layers])

    def statistics(self, features: Mapping[str, tf.Tensor], region: "Region") -> dict[str, Any]:
        return {name: self.layer_statistic(features[name], name,
                                           None if region is None else region[name])
                for name in self.layers}

    def combine(self, statistics: Mapping[str, Any], image: tf.Tensor) -> tf.Tensor:
        if not self.layers:
            return tf.zeros(tf.shape(image)[:1])
        per_layer = tf.stack([self.layer_value(statistics[name], name) for name in self.layers],
                             axis=1)
        return tf.reduce_sum(self.layer_weights * per_layer, axis=1)

    def layer_statistic(self, features: tf.Tensor, name: str,
                        where: tuple[int, int, int, int] | None) -> tf.Tensor:
        raise NotImplementedError

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        raise NotImplementedError

    def _positions(self, name: str) -> float:
        """M of a layer at the step's size."""
        return float(self.shapes[name][1] * self.shapes[name][2])

    def _variable(self, shape: Sequence[int], name: str) -> tf.Variable:
        return tf.Variable(tf.zeros(shape), name=name)


class ContentLoss(LayerTerm):
    """The content loss against the content image's features: the paper's, or with
    `reference=True` the authors' code's scaling (a mean, not half a sum)."""

    name = "content"

    def __init__(self, layers: Sequence[str] = (), reference: bool = False) -> None:
        super().__init__(layers)
        self.reference = reference

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.targets = {name: self._variable([batch, *self.shapes[name][1:]], f"P_{name}")
                        for name in self.layers}

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        features = self.extractor.reduce(targets.content[None], self._placed)
        for name in self.layers:
            self.targets[name][member].assign(features[name][0])

    def _placed(self, features: Mapping[str, tf.Tensor], region: "Region") -> dict[str, Any]:
        """The features where they sit in the whole layer (zero elsewhere)."""
        if region is None:
            return {name: features[name] for name in self.layers}
        placed = {}
        for name in self.layers:
            top, bottom, left, right = region[name]
            _, height, width, _ = self.shapes[name]
            placed[name] = tf.pad(features[name], [[0, 0], [top, height - bottom],
                                                   [left, width - right], [0, 0]])
        return placed

    def layer_statistic(self, features: tf.Tensor, name: str,
                        where: tuple[int, int, int, int] | None) -> tf.Tensor:
        return content_loss(features, _at(self.targets[name], where))

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        if not self.reference:
            return statistic
        return 2.0 * statistic / (self._positions(name) * self.shapes[name][3])


class StyleLoss(LayerTerm):
    """The style loss against the Gram matrices of the styles, blended by weight: the paper's,
    or with `reference=True` the authors' code's scaling."""

    name = "style"

    def __init__(self, layers: Sequence[str] = (), reference: bool = False) -> None:
        super().__init__(layers)
        self.reference = reference
        self.loss = reference_gram_loss if reference else gram_loss

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.targets = {name: self._variable([batch, *self._target_shape(name)], f"A_{name}")
                        for name in self.layers}

    def _target_shape(self, name: str) -> list[int]:
        return [self.shapes[name][-1]] * 2

    def _style_grams(self, style: np.ndarray) -> dict[str, tf.Tensor]:
        """A style image's Grams (divided by its M in the reference scaling)."""
        grams = self.extractor.reduce(style[None], self._grams)
        if not self.reference:
            return {name: gram[0] for name, gram in grams.items()}
        shapes = self.extractor.feature_shapes(*style.shape[:2])
        return {name: gram[0] / float(shapes[name][1] * shapes[name][2])
                for name, gram in grams.items()}

    def _grams(self, features: Mapping[str, tf.Tensor], region: "Region") -> dict[str, Any]:
        return {name: gram_matrix(features[name]) for name in self.layers}

    def grams(self, targets: Targets) -> list[tuple[dict[str, tf.Tensor], float]]:
        """Each style's Grams, with its blend weight normalised to sum 1."""
        total = sum(weight for _, weight in targets.styles)
        return [(self._style_grams(image), weight / total) for image, weight in targets.styles]

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        grams = self.grams(targets)
        for name in self.layers:
            self.targets[name][member].assign(tf.add_n([g[name] * weight for g, weight in grams]))

    def layer_statistic(self, features: tf.Tensor, name: str,
                        where: tuple[int, int, int, int] | None) -> tf.Tensor:
        return gram_matrix(features)

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        return self.loss(statistic, self.targets[name], self._positions(name))


class GuidedStyleLoss(StyleLoss):
    """Spatial control: one style per masked region, each against its own Grams."""

    def __init__(self, layers: Sequence[str], regions: int) -> None:
        super().__init__(layers)
        self.regions = regions

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.masks = {name: self._variable([batch, self.regions, *self.shapes[name][1:3]],
                                           f"mask_{name}") for name in self.layers}
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

    def layer_statistic(self, features: tf.Tensor, name: str,
                        where: tuple[int, int, int, int] | None) -> tf.Tensor:
        return guided_grams(features, _at(self.masks[name], where, axis=2))

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        area = tf.reduce_mean(tf.square(self.masks[name]), axis=[2, 3])
        return guided_gram_loss(statistic, area, self.targets[name], self.region_weights,
                                self._positions(name))


class TotalVariation(LossTerm):
    """Smoothness of the image itself (not in the paper)."""

    name = "tv"

    def combine(self, statistics: Mapping[str, Any], image: tf.Tensor) -> tf.Tensor:
        return total_variation(image)


class TemporalLoss(LossTerm):
    """Ruder, Dosovitskiy & Brox (2016): Σ_j 1/D Σ c_j (x − ω_j)², the image against each
    earlier stylised frame ω_j warped into this one, weighted by the flow's reliability c_j;
    D = H·W·3. With `like_content` (the paper's scaling) times ½·N·M of that content layer, so
    that its weight relates to α as Ruder's γ to his α, whose content loss is a mean."""

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

    def combine(self, statistics: Mapping[str, Any], image: tf.Tensor) -> tf.Tensor:
        error = tf.square(image[:, None] - self.warped) * self.weights[..., None]
        return self.scale * tf.reduce_sum(tf.reduce_mean(error, axis=[2, 3, 4]), axis=1)


# Terms beyond the paper's, by name, built from a run's settings (a RunConfig); `terms` weighs them.
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
