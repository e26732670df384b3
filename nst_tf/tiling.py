"""The exact objective of a large image, computed tile by tile, so that its size is bounded by
time rather than memory.

Each tile is a part of the image (`owned`) read with a margin (`crop`) at least as wide as the
deepest layer's reach, its origin on the coarsest layer's grid: the responses the tile gives for
its part then equal the whole image's. The loss terms are functions of sums over positions (Gram
matrices, squared errors; `LossTerm.statistics`), which add up over the parts. A first pass,
without a tape, adds up each tile's sums; the terms' values and their derivatives with respect
to the sums follow from the totals; a second pass differentiates each tile's sums, weighted by
those derivatives, and adds its gradient (margin included: the part's responses read it) into
the image's. Loss and gradient equal the untiled ones up to float rounding.
"""

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from nst_tf.losses import LossTerm
from nst_tf.model import FeatureExtractor, Reach, Reducer

Box = tuple[int, int, int, int]  # top, bottom, left, right


@dataclass(frozen=True)
class Tile:
    """A part of the image (`owned`) and what the network reads for it (`crop`), in pixels;
    `region` is the part in each layer's positions, `within` the same inside the crop's."""

    crop: Box
    owned: Box
    region: dict[str, Box]
    within: dict[str, Box]

    def owned_features(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
        """The crop's responses at the part it owns."""
        return {name: f[:, t:b, left:right] for name, f in features.items()
                for t, b, left, right in [self.within[name]]}


def grid(reaches: Mapping[str, Reach]) -> int:
    """Tiles start on this grid: the coarsest stride of the layers read."""
    return max(reach.stride for reach in reaches.values())


def plan(shape: tuple[int, int], tile: int, reaches: Mapping[str, Reach]) -> list[Tile]:
    """The tiles of a (height, width) image, each part at most `tile` px (rounded down to the
    grid) along each axis."""
    step = grid(reaches)
    size = max(step, tile // step * step)
    margin = max(reach.reach for reach in reaches.values())
    before = -(-margin // step) * step  # the crop starts on the grid too
    spans = [_spans(length, size, before, margin) for length in shape]
    tiles = []
    for top, bottom, crop_top, crop_bottom in spans[0]:
        for left, right, crop_left, crop_right in spans[1]:
            region, within = {}, {}
            for name, reach in reaches.items():
                s = reach.stride
                rows = (top // s, bottom // s if bottom < shape[0] else shape[0] // s)
                cols = (left // s, right // s if right < shape[1] else shape[1] // s)
                region[name] = (*rows, *cols)
                within[name] = (rows[0] - crop_top // s, rows[1] - crop_top // s,
                                cols[0] - crop_left // s, cols[1] - crop_left // s)
            tiles.append(Tile((crop_top, crop_bottom, crop_left, crop_right),
                              (top, bottom, left, right), region, within))
    return tiles


def _spans(length: int, size: int, before: int, after: int) -> list[tuple[int, int, int, int]]:
    """Along one axis: each part's start and end, and its crop's."""
    return [(start, min(start + size, length), max(0, start - before),
             min(length, start + size + after)) for start in range(0, length, size)]


class TiledExtractor:
    """A FeatureExtractor whose whole-image reductions (targets, style Grams) go tile by tile;
    everything else is the extractor's."""

    def __init__(self, extractor: FeatureExtractor, tile: int) -> None:
        self.extractor, self.tile = extractor, tile
        self.reaches = extractor.reaches()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.extractor, name)

    def reduce(self, image: np.ndarray, fn: Reducer) -> dict[str, tf.Tensor]:
        """Σ over tiles of `fn` of each tile's responses at its part."""
        total: dict[str, tf.Tensor] = {}
        for tile in plan(image.shape[1:3], self.tile, self.reaches):
            top, bottom, left, right = tile.crop
            crop = tf.constant(image[:, top:bottom, left:right], tf.float32)
            part = fn(tile.owned_features(self.extractor._forward(crop)), tile.region)
            total = {k: total[k] + v for k, v in part.items()} if total else part
        return total


def tileable(term: LossTerm) -> bool:
    """Whether a term can be computed tile by tile: it states its value from statistics, or
    reads no features."""
    return type(term).value is LossTerm.value or not term.layers


class TiledObjective:
    """Each term's value at a batch of images, (B, terms), and the gradient of a weighted
    total, computed tile by tile (see the module's doc)."""

    def __init__(self, extractor: FeatureExtractor, terms: Sequence[LossTerm],
                 shape: tuple[int, int], tile: int) -> None:
        untileable = [term.name for term in terms if not tileable(term)]
        if untileable:
            raise ValueError(f"the {untileable[0]} term reads features without statistics: it "
                             "cannot be computed tile by tile")
        self.extractor, self.terms = extractor, tuple(terms)
        self.tiles = plan(shape, tile, extractor.reaches())
        # Each tile's work is a function of its own, called, not inlined, so its activations
        # are freed when it returns; each call takes the running sum the one before returned,
        # so the calls run one after another: one tile's activations in memory at a time.
        self._tile_statistics = [_separate(self._add_statistics, tile) for tile in self.tiles]
        self._tile_gradient = [_separate(self._add_gradient, tile) for tile in self.tiles]
        self._reads_features = any(term.layers for term in self.terms)

    def values(self, image: tf.Tensor) -> tf.Tensor:
        return self._combine(self._gather(image), image)

    def values_and_grad(self, image: tf.Tensor, total: Callable[[tf.Tensor], tf.Tensor]
                        ) -> tuple[tf.Tensor, tf.Tensor]:
        """`total` maps (B, terms) values to (B, 1 + terms) values, the total first; the
        gradient is that of the sum of the totals."""
        statistics = self._gather(image)
        with tf.GradientTape() as tape:
            tape.watch([statistics, image])
            values = total(self._combine(statistics, image))
            summed = tf.reduce_sum(values[:, 0])
        slopes, grad = tape.gradient(summed, [statistics, image],
                                     unconnected_gradients=tf.UnconnectedGradients.ZERO)
        for add_gradient in self._tile_gradient if self._reads_features else ():
            grad = add_gradient(image, slopes, grad)
        return values, grad

    def _statistics(self, crop: tf.Tensor, tile: Tile) -> list[dict[str, Any]]:
        """Each term's statistics of the part `tile` owns, from its crop."""
        features = tile.owned_features(self.extractor(crop))
        return [term.statistics(features, tile.region) if term.layers else {}
                for term in self.terms]

    def _add_statistics(self, image: tf.Tensor, total: Any, tile: Tile) -> list[dict[str, Any]]:
        """`total` (None for the first tile) plus the tile's statistics."""
        top, bottom, left, right = tile.crop
        part = self._statistics(image[:, top:bottom, left:right], tile)
        return part if total is None else tf.nest.map_structure(tf.add, total, part)

    def _add_gradient(self, image: tf.Tensor, slopes: list[dict[str, Any]], grad: tf.Tensor,
                      tile: Tile) -> tf.Tensor:
        """`grad` plus the gradient of the tile's statistics weighted by `slopes`."""
        top, bottom, left, right = tile.crop
        crop = image[:, top:bottom, left:right]
        with tf.GradientTape() as tape:
            tape.watch(crop)
            parts = self._statistics(crop, tile)
            weighted = tf.add_n([tf.reduce_sum(slope * part) for slope, part in zip(
                tf.nest.flatten(slopes), tf.nest.flatten(parts), strict=True)])
        height, width = image.shape[1:3]
        return grad + tf.pad(tape.gradient(weighted, crop), [
            [0, 0], [top, height - bottom], [left, width - right], [0, 0]])

    def _gather(self, image: tf.Tensor) -> list[dict[str, Any]]:
        """Pass one: every term's statistics of the whole image, added up tile by tile."""
        total = None
        for add_statistics in self._tile_statistics:
            total = add_statistics(image, total)
        return total

    def _combine(self, statistics: Sequence[Mapping[str, Any]], image: tf.Tensor) -> tf.Tensor:
        return tf.stack([term.combine(stats, image) if type(term).value is LossTerm.value
                         else term.value({}, image)
                         for term, stats in zip(self.terms, statistics, strict=True)], axis=1)


def _separate(fn: Callable[..., Any], tile: Tile) -> Callable[..., Any]:
    """`fn`(..., tile) for this tile, as a function the enclosing graph calls, not inlines."""
    return tf.function(lambda *args: fn(*args, tile), autograph=False,
                       experimental_attributes={"_noinline": True})
