"""The per-paper weakness experiments (issue 35), the style_losses panels at each paper's
settings, and scripts/image_stats.py's measures against independent formulas."""

import colorsys
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
from PIL import Image

from nst_tf.compose import validate
from nst_tf.images import fit_long_side, read_rgb
from nst_tf.sweep import sweep_grid
from tests.helpers import FAST, ROOT, compose_config, read_csv, run_here, run_script

sys.path.insert(0, str(ROOT / "scripts"))
import image_stats  # noqa: E402  (a script, found on the path above)

SW_LAYERS = ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv3_3",
             "conv3_4", "conv4_1", "conv4_2", "conv4_3", "conv4_4"]


def composed(*overrides: str):
    return validate(compose_config(*overrides))


def test_weakness_experiments_sweep_gram_against_each_later_term():
    expected = {"weakness_histogram": ("composition_vii", "gram,histogram"),
                "weakness_sliced_wasserstein": ("scream", "gram,sliced_wasserstein"),
                "weakness_mrf": ("starry", "gram,mrf")}
    for experiment, (style, terms) in expected.items():
        params = compose_config(f"+experiment={experiment}", with_hydra=True).hydra.sweeper.params
        assert dict(params) == {"style": style, "style_loss": terms}, experiment


def test_the_texture_weaknesses_start_from_noise_without_content():
    for experiment, term in [("weakness_histogram", "histogram"),
                             ("weakness_sliced_wasserstein", "sliced_wasserstein")]:
        for name in ("gram", term):
            cfg = composed(f"+experiment={experiment}", f"style_loss={name}")
            assert cfg.content_layers == [] and cfg.init.value == "noise"
            assert cfg.content.file == cfg.style.file  # the texture has its source's shape
            assert (cfg.size, cfg.style_loss.name.value) == (128, name)
    # Gram and sliced Wasserstein compare on the same layers, sliced Wasserstein's preset's
    gram = composed("+experiment=weakness_sliced_wasserstein", "style_loss=gram")
    sw = composed("+experiment=weakness_sliced_wasserstein", "style_loss=sliced_wasserstein")
    assert gram.style_layers == sw.style_loss.layers == SW_LAYERS
    # the histogram term weighed for 128 px: the preset's 512 px weight times (512 / 128)²
    preset = composed("style_loss=histogram").style_loss.weight
    hist = composed("+experiment=weakness_histogram", "style_loss=histogram")
    assert hist.style_loss.weight == pytest.approx(preset * (512 / 128) ** 2)
    assert hist.style_layers == ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]


def test_mrf_runs_at_li_and_wand_settings_where_its_paper_is_shown():
    # weakness_mrf: both columns on Li & Wand's course; a pyramid that follows size
    for name in ("gram", "mrf"):
        cfg = composed("+experiment=weakness_mrf", f"style_loss={name}")
        assert (cfg.init.value, cfg.scales, cfg.iterations) == ("content", [48, 96, 192], 100)
        assert cfg.content_layers == ["conv4_2"]
    assert composed("+experiment=weakness_mrf", "size=384").scales == [96, 192, 384]
    # style_losses: each term its paper's way, MRF from the photo and coarse to fine
    params = compose_config("+experiment=style_losses", with_hydra=True).hydra.sweeper.params
    assert params["+panel/style_losses"] == "gram,mrf,histogram,sliced_wasserstein"
    for panel in params["+panel/style_losses"].split(","):
        cfg = composed("+experiment=style_losses", f"+panel/style_losses={panel}", "size=128")
        assert cfg.style_loss.name.value == panel
        assert (cfg.init.value, cfg.scales) == (
            ("content", [32, 64, 128]) if panel == "mrf" else ("noise", []))


@pytest.mark.parametrize(("experiment", "term", "size"), [
    ("weakness_histogram", "histogram", "size=32"),
    ("weakness_sliced_wasserstein", "sliced_wasserstein", "size=32"),
    ("weakness_mrf", "mrf", "size=128"),  # its pyramid's 32 px scale: MRF's smallest
])
def test_each_weakness_experiment_runs_tiny(tmp_path, images_dir, experiment, term, size):
    summary = run_here(tmp_path / term, f"+experiment={experiment}", f"style_loss={term}",
                       "+debug=tiny", size, *FAST)
    assert summary["status"] == "ok", summary.get("reason")
    # The run took the experiment's term (the histogram's beside Gram's, the others in its
    # place as "style") on the term's own layers, and logged a loss for it at every step.
    logged = "histogram" if term == "histogram" else "style"
    assert summary["config"]["style_loss"]["name"] == term
    assert list(summary["loss_weights"]["layers"][logged]) == summary["config"]["style_loss"][
        "layers"]
    values = [row[logged] for row in read_csv(tmp_path / term / "losses.csv")]
    assert len(values) > 1 and all(np.isfinite(values)) and min(values) > 0, values


def test_mrf_refuses_a_grid_smaller_than_its_patches_in_one_line(tmp_path, images_dir):
    summary = run_here(tmp_path / "small", "+experiment=weakness_mrf", "style_loss=mrf",
                       "+debug=tiny", "size=96", *FAST)  # 24 px: conv4_1 is 3x2
    assert summary["exit_code"] != 0
    assert summary["reason"] == (
        "style_loss=mrf: the image of 24x18 px gives conv4_1 only 3x2 positions, fewer than "
        "its 3x3 patches; use a larger size (or smallest of scales), or "
        "style_loss.patch_size=2")


# The measures against formulas written apart from them.

def test_wasserstein_1d_is_scipys():
    rng = np.random.default_rng(0)
    for n, m in [(1, 1), (7, 5), (100, 37), (64, 64)]:
        u, v = rng.normal(size=n), rng.gamma(2.0, size=m)
        assert image_stats.wasserstein_1d(u, v) == pytest.approx(
            scipy.stats.wasserstein_distance(u, v), rel=1e-12, abs=1e-12)
    assert image_stats.wasserstein_1d([1, 2, 3], [3, 1, 2]) == 0.0


def test_contrast_saturation_and_colour_distance():
    rng = np.random.default_rng(1)
    style = rng.uniform(0, 255, size=(6, 5, 3))
    image = 0.5 * style + 60  # half the contrast, shifted
    assert image_stats.contrast(image, style) == pytest.approx(0.5)
    pixels = [colorsys.rgb_to_hsv(*p / 255) for p in image.reshape(-1, 3)]
    assert image_stats.saturation(image) == pytest.approx(np.mean([s for _, s, _ in pixels]))
    assert image_stats.saturation(np.zeros((2, 2, 3))) == 0.0
    expected = np.mean([scipy.stats.wasserstein_distance(image[..., c].ravel(),
                                                         style[..., c].ravel()) for c in range(3)])
    assert image_stats.colour_w1(image, style) == pytest.approx(expected)


def test_patch_distance_is_the_brute_force_nearest_patch():
    rng = np.random.default_rng(2)
    image, style = rng.uniform(0, 255, (9, 8, 3)), rng.uniform(0, 255, (7, 10, 3))
    k, step = 3, 2
    expected = []
    for y in range(0, 9 - k + 1, step):
        for x in range(0, 8 - k + 1, step):
            p = image[y:y + k, x:x + k]
            expected.append(min(np.sqrt(np.mean((p - style[j:j + k, i:i + k]) ** 2))
                                for j in range(7 - k + 1) for i in range(10 - k + 1)))
    assert image_stats.patch_distance(image, style, k, step) == pytest.approx(np.mean(expected))
    # an image cut from the style is made of its patches
    assert image_stats.patch_distance(style[1:6, 2:9], style, k, 1) == pytest.approx(0, abs=1e-4)


@pytest.fixture(scope="module")
def histogram_sweep(tmp_path_factory, images_dir) -> Path:
    sweep = tmp_path_factory.mktemp("weakness") / "sweep"
    ran = run_script("run.py", "-m", "+experiment=weakness_histogram", "+debug=tiny",
                     f"hydra.sweep.dir={sweep}")
    assert ran.returncode == 0, ran.stderr[-2000:]
    return sweep


def test_a_panel_axis_does_not_restate_the_preset_its_option_names(histogram_sweep, tmp_path):
    # As style_losses lays out: +panel/style_losses=gram,histogram each pick a style_loss preset
    # (whose layers and weight the option's name says) and may set more (init, scales).
    sweep = tmp_path / "panels"
    for job, panel in enumerate(["gram", "histogram"]):
        shutil.copytree(histogram_sweep / str(job), sweep / str(job))
        overrides = sweep / str(job) / ".hydra" / "overrides.yaml"
        lines = [line for line in overrides.read_text().splitlines() if "style_loss=" not in line]
        overrides.write_text("\n".join([f"- +panel/style_losses={panel}", *lines]) + "\n")
    summary_path = sweep / "1" / "summary.json"
    summary = json.loads(summary_path.read_text())
    summary["config"]["init"] = "content"  # a setting the panel adds, which its label says
    summary_path.write_text(json.dumps(summary))
    assert sweep_grid(sweep).columns.labels == ["gram\ninit noise", "histogram\ninit content"]


def test_image_stats_measures_each_job_of_a_real_sweep(histogram_sweep, images_dir):
    sweep = histogram_sweep
    result = run_script("image_stats.py", str(sweep), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(result.stdout)
    assert [row["settings"].split()[:2] for row in rows] == [
        ["style=composition_vii", "style_loss=gram"],
        ["style=composition_vii", "style_loss=histogram"]]
    # job 1 measured apart: its result against the painting at the result's longer side
    image = np.asarray(read_rgb(sweep / "1" / "result.png"), np.float64)
    with Image.open(images_dir / "composition_vii.jpg") as painting:
        style = np.asarray(fit_long_side(painting.convert("RGB"), max(image.shape[:2])),
                           np.float64)
    assert rows[1]["contrast"] == pytest.approx(np.mean(image.std(axis=(0, 1))
                                                        / style.std(axis=(0, 1))))
    assert rows[1]["colour_w1"] == pytest.approx(np.mean([scipy.stats.wasserstein_distance(
        image[..., c].ravel(), style[..., c].ravel()) for c in range(3)]))
    # a texture's content is its style: no photo row
    assert len(rows) == 2
