"""Spatial control: each masked region of the content takes its own style's statistics."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from nst_tf import losses
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.model import FeatureExtractor
from tests.helpers import FAST, cli_outcome, run_here

LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


@pytest.fixture()
def halves(tmp_path, images_dir):
    width, height = Image.open(images_dir / "tubingen.jpg").size
    left = np.zeros((height, width), np.uint8)
    left[:, : width // 2] = 255
    paths = tmp_path / "left.png", tmp_path / "right.png"
    Image.fromarray(left).save(paths[0])
    Image.fromarray(255 - left).save(paths[1])
    return paths


def test_each_region_is_closest_to_its_own_style(halves, tmp_path, images_dir, vgg_weights):
    out = tmp_path / "run"
    styles = (f"styles=[{{preset: starry, mask: {halves[0]}}}, "
              f"{{preset: composition_vii, mask: {halves[1]}}}]")
    summary = run_here(out, styles, "size=64", "iterations=80", *FAST)
    assert summary["status"] == "ok", summary["reason"]

    extractor = FeatureExtractor(vgg_weights.arrays, "avg", LAYERS)
    image = to_array(read_rgb(out / "result.png"))
    features = extractor(tf.constant(image[None]))
    masks = [np.asarray(Image.open(p).resize(image.shape[1::-1], Image.Resampling.BILINEAR),
                        np.float32) / 255 for p in halves]
    style_grams = []
    for name in ("starry_night.jpg", "composition_vii.jpg"):
        style = to_array(fit_long_side(read_rgb(images_dir / name), 64))
        feats = extractor(tf.constant(style[None]))
        style_grams.append({n: losses.gram_matrix(feats[n]) for n in LAYERS})

    pooled = [extractor.downsample(mask) for mask in masks]

    def distance(region: int, style: int) -> float:
        return sum(
            float(losses.guided_style_layer_loss(
                features[n], tf.constant(pooled[region][n][None, None]),
                style_grams[style][n][None], tf.constant([[1.0]]))[0])
            for n in LAYERS
        )

    for region, other in ((0, 1), (1, 0)):
        assert distance(region, region) < distance(region, other), region


def test_all_ones_mask_equals_the_plain_style_loss(vgg_weights, images_dir):
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", ["conv2_1"])
    image = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 48))
    style = to_array(fit_long_side(read_rgb(images_dir / "the_scream.jpg"), 48))
    f = extractor(tf.constant(image[None]))["conv2_1"]
    a = losses.gram_matrix(extractor(tf.constant(style[None]))["conv2_1"])
    ones = tf.ones([1, 1, *f.shape[1:3]])
    guided = losses.guided_style_layer_loss(f, ones, a[None], tf.constant([[1.0]]))
    assert float(guided[0]) == pytest.approx(float(losses.style_layer_loss(f, a)[0]), rel=1e-5)


def test_mask_of_wrong_size_gives_one_line(tmp_path, images_dir):
    small = tmp_path / "small.png"
    Image.new("L", (100, 100), 255).save(small)
    width, height = Image.open(images_dir / "tubingen.jpg").size  # 1024x768 for the real one
    code, line = cli_outcome(tmp_path / "out", f"styles=[{{preset: starry, mask: {small}}}]",
                             "+debug=tiny", "iterations=1")
    assert code == 2 and "\n" not in line
    assert f"100x100 but the content image is {width}x{height}" in line, line
