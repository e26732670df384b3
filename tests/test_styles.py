"""Several styles blended by weight."""

import json

import numpy as np
import pytest
import tensorflow as tf

from nst_tf.losses import StyleLoss, Targets
from nst_tf.model import FeatureExtractor
from tests.helpers import cli_outcome, run_here


def test_two_styles_weighted_one_and_zero_equal_the_single_style(tmp_path, images_dir):
    single, blended = tmp_path / "single", tmp_path / "blended"
    common = ["+debug=tiny", "size=48", "iterations=8"]
    assert run_here(single, *common)["status"] == "ok"
    summary = run_here(blended, *common,
                       "styles=[{preset: starry, weight: 1}, {preset: scream, weight: 0}]")
    assert summary["status"] == "ok", summary["reason"]
    assert (blended / "result.png").read_bytes() == (single / "result.png").read_bytes()
    summary = json.loads((blended / "summary.json").read_text())
    assert [s["weight"] for s in summary["styles"]] == [1.0, 0.0]


@pytest.mark.parametrize("reference", [False, True])
def test_blended_style_target_is_the_weighted_sum_of_the_styles_grams(vgg_weights, reference):
    layers = ["conv1_1", "conv2_1"]
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", layers)
    rng = np.random.default_rng(0)
    # Styles of other sizes than the run's, and than each other: each Gram is its own image's.
    first, second = (rng.uniform(0, 255, shape).astype(np.float32)
                     for shape in ((20, 28, 3), (24, 12, 3)))
    term = StyleLoss(layers, reference=reference)
    term.build(extractor, (16, 16), batch=2)
    term.start(1, Targets(np.zeros((16, 16, 3), np.float32), [(first, 1.0), (second, 3.0)]), {})

    def gram(image: np.ndarray, name: str) -> np.ndarray:
        features = extractor(tf.constant(image[None]))[name].numpy()[0].astype(np.float64)
        flat = features.reshape(-1, features.shape[-1])
        return flat.T @ flat / (flat.shape[0] if reference else 1)

    for name in layers:
        want = 0.25 * gram(first, name) + 0.75 * gram(second, name)  # weights 1 and 3, summing 1
        got = term.targets[name].numpy()
        np.testing.assert_allclose(got[1], want, rtol=1e-4, atol=1e-3 * np.abs(want).max())
        assert not np.any(got[0])  # the other member of the batch is left alone


@pytest.mark.parametrize("styles, expected", [
    ("[{preset: starry, weight: 0}, {preset: scream, weight: 0}]", "sum to 0"),
    ("[{preset: starry, weight: -1}, {preset: scream, weight: 2}]", "negative"),
    ("[{preset: nope}]", "unknown style preset 'nope'"),
    ("[{weight: 1}]", "exactly one of preset or path"),
])
def test_bad_blends_give_one_line(styles, expected, tmp_path):
    code, line = cli_outcome(tmp_path / "out", "+debug=tiny", "iterations=1", f"styles={styles}")
    assert code == 2 and "\n" not in line and expected in line, line
