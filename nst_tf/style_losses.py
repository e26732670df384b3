"""The style terms that came after Gram matrices, each a LossTerm on whole images.

- `SlicedWassersteinLoss` (Heitz, Vanhoey, Chambon & Belcour 2021): features projected on
  random unit directions, sorted, against the style's sorted projections.
- `HistogramLoss` (Risser, Wilmot & Barnes 2017): each channel against its histogram-matched
  self; beside the Gram term.
- `MrfLoss` (Li & Wand 2016): each k×k patch against its nearest style patch.

Sorting and nearest patches are not sums over positions, so none of them is computed in tiles
(nst_tf.tiling refuses them). Style and result may differ in size: the style's sorted values
are resampled to the result's count by nearest rank, index ⌊i·P/M⌋, which for a style s² times
smaller repeats each value s² times, as Heitz et al.'s code repeats the example's features.
Several styles: the target sorted values are the blend-weighted mean of each style's, the
exact 1-D Wasserstein barycentre of their distributions per direction (per channel); MRF sums
each style's energy, weighted.
"""

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from nst_tf.errors import UserError
from nst_tf.losses import LayerTerm, Targets

if TYPE_CHECKING:
    from nst_tf.backbones import Backbone
    from nst_tf.model import FeatureExtractor

FLOAT_BYTES = 4  # the terms' state and tensors are float32, in bf16 runs too


def nearest_rank(sorted_values: tf.Tensor, counts: tf.Tensor, m: int) -> tf.Tensor:
    """Sorted values (..., P, D), each of the leading rows valid up to its count (...), as `m`
    values by nearest rank: index ⌊i·count/m⌋, (..., m, D)."""
    i = tf.range(m, dtype=tf.int64)
    index = (i * tf.cast(counts, tf.int64)[..., None]) // m
    return tf.gather(sorted_values, index, batch_dims=len(counts.shape), axis=len(counts.shape))


def grid(backbone: "Backbone", layer: str, size: tuple[int, int]) -> tuple[int, int, int]:
    """(rows, columns, channels) of a layer's responses to an image of (width, height) px,
    from the backbone's declaration (nothing built)."""
    stride, channels = backbone.geometry(layer)
    return size[1] // stride, size[0] // stride, channels


def positions(backbone: "Backbone", layer: str, size: tuple[int, int]) -> int:
    """M of a layer for an image of (width, height) px."""
    rows, columns, _ = grid(backbone, layer, size)
    return rows * columns


def blend(styles: Sequence[tuple[np.ndarray, float]]) -> list[tuple[np.ndarray, float]]:
    """The styles with their blend weights normalised to sum 1."""
    total = sum(weight for _, weight in styles)
    return [(image, weight / total) for image, weight in styles]


class Padded:
    """Per member of a batch, its styles' arrays of varying lengths (positions, patches) in one
    variable, zero-padded, with each array's length: members with other numbers or sizes of
    styles share the compiled step, which reads the shapes at run time."""

    def __init__(self, batch: int, tail: Sequence[int], name: str) -> None:
        self.tail, self.members = tuple(tail), [[] for _ in range(batch)]
        self.values = tf.Variable(tf.zeros([batch, 1, 1, *tail]), name=name,
                                  shape=tf.TensorShape([batch, None, None, *tail]))
        # An empty slot counts 1 (of zeros), so that nothing divides by 0; its weight is 0.
        self.counts = tf.Variable(tf.ones([batch, 1], tf.int32), name=f"{name}_counts",
                                  shape=tf.TensorShape([batch, None]))

    def put(self, member: int, arrays: Sequence[np.ndarray]) -> None:
        self.members[member] = [np.asarray(a, np.float32) for a in arrays]
        styles = max(len(arrays) for arrays in self.members)
        length = max((len(a) for arrays in self.members for a in arrays), default=1)
        values = np.zeros([len(self.members), styles, length, *self.tail], np.float32)
        counts = np.ones([len(self.members), styles], np.int32)
        for b, arrays in enumerate(self.members):
            for k, a in enumerate(arrays):
                values[b, k, :len(a)], counts[b, k] = a, len(a)
        self.values.assign(values)
        self.counts.assign(counts)

    def valid(self) -> tf.Tensor:
        """(B, K, P) true where a position holds a value."""
        return tf.range(tf.shape(self.values)[2])[None, None] < self.counts[..., None]


class _WholeImageTerm(LayerTerm):
    """Σ_l w_l E_l over the term's layers, each E_l a function of the whole layer's features
    (so its `value` is not stated from sums over positions: never tiled)."""

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        return self.combine({name: features[name] for name in self.layers}, image)

    def style_features(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """A style image's features by layer, (h, w, N)."""
        features = self.extractor.reduce(image[None], lambda f, region: {
            name: f[name] for name in self.layers})
        return {name: f.numpy()[0] for name, f in features.items()}

    def _unmasked_styles(self, targets: Targets) -> list[tuple[dict[str, np.ndarray], float]]:
        """Each style's features by layer with its blend weight; masks refused: the term
        matches whole images, not regions."""
        if targets.masks:
            raise ValueError(f"the {type(self).__name__} matches whole images, not regions")
        return [(self.style_features(image), weight) for image, weight in blend(targets.styles)]


class SlicedWassersteinLoss(_WholeImageTerm):
    """E_l = mean over the M positions and D = N directions of (sort(F·V) − T)², T the style's
    sorted projections at M values; the directions V, unit columns, are drawn anew at each
    evaluation (an iteration, but for a line search's extra ones) from (seed, evaluation)."""

    name = "style"

    def __init__(self, layers: Sequence[str], seed: int) -> None:
        super().__init__(layers)
        self.seed = seed

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.styles = {name: Padded(batch, [self.shapes[name][3]], f"sw_{name}")
                       for name in self.layers}
        self.blend = Padded(batch, [], "sw_blend")  # (B, K, 1): each style's weight
        self.evaluations = tf.Variable(0, dtype=tf.int64, name="sw_evaluations")

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        styles = self._unmasked_styles(targets)
        for name in self.layers:
            self.styles[name].put(member, [f[name].reshape(-1, f[name].shape[-1])
                                           for f, _ in styles])
        self.blend.put(member, [[weight] for _, weight in styles])
        self.evaluations.assign(0)  # the same directions as any run of this seed

    def state_bytes(self, backbone: "Backbone", content: tuple[int, int],
                    styles: Sequence[tuple[int, int]]) -> float:
        count = 0
        for name in self.layers:
            m, n = positions(backbone, name, content), backbone.geometry(name)[1]
            p = max(positions(backbone, name, style) for style in styles)
            # the styles' features (kept); in the step their projections, padded and sorted,
            # the targets at M ranks, the result's projections sorted with their gradients, V
            count += len(styles) * (4 * p * n + m * n) + 4 * m * n + n * n
        return FLOAT_BYTES * count

    def value(self, features: Mapping[str, tf.Tensor], image: tf.Tensor) -> tf.Tensor:
        self._evaluation = self.evaluations.assign_add(1)  # for layer_value, in this trace
        return super().value(features, image)

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        n = self.shapes[name][3]
        seed = tf.stack([tf.constant(self.seed, tf.int64),
                         self._evaluation * len(self.layers) + self.layers.index(name)])
        directions = tf.random.stateless_normal([n, n], seed)
        directions /= tf.norm(directions, axis=0, keepdims=True)
        return sliced_wasserstein(statistic, self.styles[name], self.blend.values[..., 0],
                                  directions)


def sliced_wasserstein(features: tf.Tensor, styles: Padded, weights: tf.Tensor,
                       directions: tf.Tensor) -> tf.Tensor:
    """Per member, mean (sort(F·V) − Σ_k w_k T_k)² over positions and directions."""
    flat = tf.reshape(features, [tf.shape(features)[0], -1, features.shape[-1]])
    result = tf.sort(tf.matmul(flat, directions), axis=1)
    projected = tf.einsum("bkpn,nd->bkpd", styles.values, directions)
    # Padding sorts last, past every count, so the nearest ranks never read it.
    padded = tf.where(styles.valid()[..., None], projected, projected.dtype.max)
    target = nearest_rank(tf.sort(padded, axis=2), styles.counts, flat.shape[1])
    target = tf.reduce_sum(weights[..., None, None] * target, axis=1)
    return tf.reduce_mean(tf.square(result - target), axis=[1, 2])


class HistogramLoss(_WholeImageTerm):
    """Risser et al.'s E_l = ||F − R(F)||², R(F) each channel of F remapped to the style's
    histogram. Remapped exactly by rank (the i-th smallest value of a channel becomes the
    style's i-th of M), where they remap through 256-bin histograms; R is without gradient,
    and Σ(F − R(F))² = Σ(sort(F) − T)² per channel, value and gradient alike, which is how it
    is computed: the sliced Wasserstein term's along the channels, summed."""

    name = "histogram"

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        self.targets = {name: self._variable(
            [batch, int(self._positions(name)), self.shapes[name][3]], f"hist_{name}")
            for name in self.layers}

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        styles = self._unmasked_styles(targets)
        for name in self.layers:
            m = int(self._positions(name))
            target = sum(weight * histogram_target(f[name], m) for f, weight in styles)
            self.targets[name][member].assign(target)

    def state_bytes(self, backbone: "Backbone", content: tuple[int, int],
                    styles: Sequence[tuple[int, int]]) -> float:
        # the targets at M ranks (kept); in the step the sorted features and their gradient
        return FLOAT_BYTES * sum(3 * positions(backbone, name, content) * backbone.geometry(
            name)[1] for name in self.layers)

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        flat = tf.reshape(statistic, [tf.shape(statistic)[0], -1, statistic.shape[-1]])
        return tf.reduce_sum(tf.square(tf.sort(flat, axis=1) - self.targets[name]), axis=[1, 2])


def histogram_target(features: np.ndarray, m: int) -> np.ndarray:
    """A style's sorted values per channel at `m` ranks, (m, N), from its (h, w, N) features."""
    flat = np.sort(features.reshape(-1, features.shape[-1]), axis=0)
    return nearest_rank(tf.constant(flat), tf.constant(len(flat)), m).numpy()


class MrfLoss(_WholeImageTerm):
    """Li & Wand's E_l = Σ_i ||Ψ_i(F) − Ψ_NN(i)(F_s)||² over the result's k×k patches Ψ_i, NN(i)
    the style patch of largest normalised cross-correlation, found by a convolution with the
    normalised style patches (the result patch's norm does not change which is largest).
    Several styles: Σ_k w_k of each one's energy; with masks, each patch of style k's weighted
    by its region's mask at the patch's centre (at the layer's resolution)."""

    name = "style"

    def __init__(self, layers: Sequence[str], patch_size: int = 3, stride: int = 1) -> None:
        super().__init__(layers)
        self.k, self.stride = patch_size, stride

    def build(self, extractor: "FeatureExtractor", shape: tuple[int, int], batch: int) -> None:
        super().build(extractor, shape, batch)
        for name in self.layers:
            self._check_grid("the image", name, self.shapes[name][1:3], shape)
        self.patches = {name: Padded(batch, [self.k * self.k * self.shapes[name][3]],
                                      f"mrf_{name}") for name in self.layers}
        # (B, K, Q): each style's weight at each of the result's patches
        self.patch_weights = {name: Padded(batch, [], f"mrf_weights_{name}")
                              for name in self.layers}

    def _check_grid(self, what: str, name: str, grid: Sequence[int],
                    pixels: Sequence[int]) -> None:
        """Refuse a layer's grid smaller than a patch: no patch to match (Li & Wand's code
        stops there too)."""
        if min(grid) < self.k:
            raise UserError(
                f"style_loss=mrf: {what} of {pixels[1]}x{pixels[0]} px gives {name} only "
                f"{grid[1]}x{grid[0]} positions, fewer than its {self.k}x{self.k} patches; use a "
                f"larger size (or smallest of scales), or style_loss.patch_size={min(grid)}")

    def _patch_count(self, name: str) -> int:
        _, height, width, _ = self.shapes[name]
        return max(height - self.k + 1, 0) * max(width - self.k + 1, 0)

    def start(self, member: int, targets: Targets, layer_weights: Mapping[str, float]) -> None:
        super().start(member, targets, layer_weights)
        styles = blend(targets.styles)
        features = [self.style_features(image) for image, _ in styles]
        pooled = [self.extractor.downsample(mask) for mask in targets.masks]
        r = self.k // 2
        for name in self.layers:
            for f, (image, _) in zip(features, styles, strict=True):
                self._check_grid("a style", name, f[name].shape[:2], image.shape[:2])
            self.patches[name].put(member, [
                patches(f[name][None], self.k, self.stride).numpy()[0] for f in features])
            _, height, width, _ = self.shapes[name]
            where = [p[name][r:height - self.k + 1 + r, r:width - self.k + 1 + r].reshape(-1)
                     for p in pooled] or [np.ones(self._patch_count(name))] * len(styles)
            self.patch_weights[name].put(member, [
                weight * w for w, (_, weight) in zip(where, styles, strict=True)])

    def layer_value(self, statistic: tf.Tensor, name: str) -> tf.Tensor:
        return mrf_energy(statistic, self.patches[name], self.patch_weights[name].values, self.k)

    def state_bytes(self, backbone: "Backbone", content: tuple[int, int],
                    styles: Sequence[tuple[int, int]]) -> float:
        count = 0
        for name in self.layers:
            q, d = self._patches(backbone, name, content, 1), self.k**2 * backbone.geometry(
                name)[1]
            kp = len(styles) * max(self._patches(backbone, name, style, self.stride)
                                   for style in styles)
            # the styles' patches and each one's weight at the result's (kept); in the step
            # the normalised patches, the scores of every pair, the matches and the result's
            # patches with their gradients
            count += 2 * kp * d + len(styles) * q + q * kp + 2 * len(styles) * q * d + 2 * q * d
        return FLOAT_BYTES * count

    def _patches(self, backbone: "Backbone", name: str, size: tuple[int, int],
                 stride: int) -> int:
        """How many k×k patches, every `stride` positions, a layer has for an image."""
        rows, columns, _ = grid(backbone, name, size)
        return math.ceil(max(rows - self.k + 1, 0) / stride) * math.ceil(
            max(columns - self.k + 1, 0) / stride)


def patches(features: tf.Tensor, k: int, stride: int = 1) -> tf.Tensor:
    """Every k×k patch inside (B, H, W, N) features, every `stride` positions, flattened in
    (row, column, channel) order: (B, P, k·k·N)."""
    out = tf.image.extract_patches(features, [1, k, k, 1], [1, stride, stride, 1], [1, 1, 1, 1],
                                   "VALID")
    return tf.reshape(out, [tf.shape(features)[0], -1, out.shape[-1]])


def mrf_energy(features: tf.Tensor, styles: Padded, weights: tf.Tensor, k: int) -> tf.Tensor:
    """Per member, Σ_k Σ_i weights[k, i] ||Ψ_i − nearest of style k's patches||²."""
    n = features.shape[-1]
    result = patches(features, k)  # (B, Q, D)
    norms = tf.norm(styles.values, axis=-1, keepdims=True)
    normalised = styles.values / tf.maximum(norms, 1e-12)
    shape, energies = tf.shape(styles.values), []
    for b in range(features.shape[0]):  # each member's own patches as the filters
        filters = tf.reshape(normalised[b], [-1, k, k, n])  # (K·P, k, k, N)
        scores = tf.nn.conv2d(features[b:b + 1], tf.transpose(filters, [1, 2, 3, 0]), 1,
                              "VALID")
        scores = tf.reshape(scores, [-1, shape[1], shape[2]])  # (Q, K, P)
        scores = tf.where(styles.valid()[b][None], scores, -np.inf)
        nearest = tf.transpose(tf.argmax(scores, axis=2, output_type=tf.int32))  # (K, Q)
        matched = tf.gather(styles.values[b], nearest, batch_dims=1, axis=1)  # (K, Q, D)
        distance = tf.reduce_sum(tf.square(result[b][None] - matched), axis=-1)
        energies.append(tf.reduce_sum(weights[b] * distance))
    return tf.stack(energies)
