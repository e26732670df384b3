"""Experiment configs and sweep figures: a real tiny fig3 multirun, grids, and the script."""

import hashlib
import io
import json
import runpy
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from PIL import Image

from nst_tf.errors import UserError
from nst_tf.files import md5_file
from nst_tf.hydra_setup import register_configs
from nst_tf.images import read_rgb, resolve_image
from nst_tf.sweep import compact_layers, format_value, sweep_grid, write_sweep_figure
from nst_tf.sweep_callback import SweepEnd
from tests.helpers import ROOT, figure_size, marked, run_script

FIG3_ROWS = ["conv1_1", "conv1_1, conv2_1", "conv1_1 … conv3_1", "conv1_1 … conv4_1",
             "conv1_1 … conv5_1"]
FIG3_COLUMNS = ["1e-5", "1e-4", "1e-3", "1e-2"]


@pytest.fixture(scope="module")
def fig3_sweep(tmp_path_factory, images_dir) -> Path:
    sweep = tmp_path_factory.mktemp("fig3") / "sweep"
    # 20 jobs, not one run: 64 s alone on a Zen 3, past run_script's 600 s on a loaded machine
    result = run_script("run.py", "-m", "+experiment=fig3", "+debug=tiny",
                        f"hydra.sweep.dir={sweep}", timeout=1800)
    assert result.returncode == 0, result.stderr
    return sweep


def test_fig3_multirun_builds_the_5x4_figure(fig3_sweep):
    grid = sweep_grid(fig3_sweep)
    assert grid.rows.key == "style_layers" and grid.rows.labels == FIG3_ROWS
    assert grid.columns.name == "α/β" and grid.columns.labels == FIG3_COLUMNS
    assert [len(row) for row in grid.cells] == [4] * 5
    # Row r, column c is job 4r + c: the first swept key varies slowest.
    assert [[job.dir.name for job in row] for row in grid.cells] == [
        [str(4 * r + c) for c in range(4)] for r in range(5)]
    assert grid.cells[2][1].config["style_layers"] == ["conv1_1", "conv2_1", "conv3_1"]
    assert grid.cells[2][1].config["alpha"] == 1e-4
    assert {(t.role, t.along) for t in grid.thumbnails} == {("content", "all"), ("style", "all")}
    assert grid.title == "fig3" and "32 px" in grid.subtitle
    assert "Andreas Praefcke" in grid.credits  # the photo's CC BY licence asks for it
    # The callback drew it when the multirun ended, after sweep.csv (these summaries predate
    # "status": a job with a result counts as ok).
    assert (fig3_sweep / "sweep.csv").read_text().count(",ok,") == 20
    with Image.open(fig3_sweep / "figure.png") as png:
        width, height = png.size
    assert width > 1000 and 0.7 < height / width < 1.4  # 5 rows x (inputs + 4 columns)
    assert (fig3_sweep / "figure.pdf").read_bytes().startswith(b"%PDF")


def test_one_swept_key_gives_one_row(fig3_sweep, tmp_path):
    sweep = tmp_path / "alpha_only"
    for job in range(4):  # the first row: only alpha differs between these jobs
        shutil.copytree(fig3_sweep / str(job), sweep / str(job))
    grid = sweep_grid(sweep)
    assert grid.rows is None and grid.columns.labels == FIG3_COLUMNS
    assert len(grid.cells) == 1
    result = run_script("make_figure.py", str(sweep), "--out", str(tmp_path / "out" / "alpha.png"))
    assert result.returncode == 0, result.stderr
    width, height = figure_size(tmp_path / "out" / "alpha.png")
    assert width > 2 * height


def test_a_config_group_axis_shows_what_each_option_sets(fig3_sweep, tmp_path, images_dir):
    # As fig2 lays out: +panel/fig2=B,... each set a style and an alpha.
    sweep = tmp_path / "panels"
    styles = ["shipwreck.jpg", "starry_night.jpg", "the_scream.jpg", "composition_vii.jpg"]
    for job, (panel, style) in enumerate(zip("BCDF", styles, strict=True)):
        shutil.copytree(fig3_sweep / str(job), sweep / str(job))
        overrides = sweep / str(job) / ".hydra" / "overrides.yaml"
        lines = [line for line in overrides.read_text().splitlines() if "alpha=" not in line]
        overrides.write_text("\n".join([f"- +panel/fig2={panel}", *lines]) + "\n")
        summary_path = sweep / str(job) / "summary.json"
        summary = json.loads(summary_path.read_text())
        summary["config"]["style"]["name"] = style.removesuffix(".jpg")
        summary["styles"] = [{"path": str(images_dir / style)}]
        summary.pop("style", None)
        summary_path.write_text(json.dumps(summary))
    grid = sweep_grid(sweep)
    assert grid.rows is None and grid.columns.name == ""
    assert grid.columns.labels == ["B\nshipwreck, α/β 1e-5", "C\nstarry_night, α/β 1e-4",
                                   "D\nthe_scream, α/β 1e-3", "F\ncomposition_vii, α/β 1e-2"]
    styles_shown = [t for t in grid.thumbnails if t.role == "style"]
    assert [t.along for t in styles_shown] == ["columns"]
    assert [paths[0].name for paths in styles_shown[0].paths] == styles
    assert write_sweep_figure(sweep) == [sweep / "figure.png", sweep / "figure.pdf"]
    width, height = figure_size(sweep / "figure.png")
    assert width > height  # one row of four


def test_a_killed_job_leaves_a_marked_panel(fig3_sweep, tmp_path):
    sweep = tmp_path / "partial"
    for job in range(4):
        shutil.copytree(fig3_sweep / str(job), sweep / str(job))
    (sweep / "3" / "result.png").unlink()
    (sweep / "3" / "summary.json").unlink()  # as if the job had died before finishing
    grid = sweep_grid(sweep)
    assert grid.columns.labels == FIG3_COLUMNS and grid.cells[0][3].result is None
    assert grid.cells[0][3].status == "failed"
    png = next(path for path in write_sweep_figure(sweep) if path.suffix == ".png")
    figure_size(png)  # decoded whole, with its PDF
    assert marked(png, "tab:red") > 100  # the failed cell's mark


def test_three_swept_keys_are_refused(fig3_sweep, tmp_path):
    sweep = tmp_path / "three"
    for job in (0, 1, 4):  # alpha, then style_layers change; seed changes on its own
        shutil.copytree(fig3_sweep / str(job), sweep / str(job))
    overrides = sweep / "0" / ".hydra" / "overrides.yaml"
    overrides.write_text(overrides.read_text() + "- seed=3\n")
    with pytest.raises(UserError, match=r"varies 3 settings \(style_layers, alpha, seed\)"):
        sweep_grid(sweep)


def test_callback_on_a_sweep_without_jobs_only_warns(tmp_path, capsys):
    # No job dir at all: Hydra reports why; the callback has nothing to record or judge.
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "empty")}}})
    (tmp_path / "empty").mkdir()
    SweepEnd().on_multirun_end(config)
    err = capsys.readouterr().err
    assert err.startswith("nst-tf: warning: no sweep.csv or figure") and "no Hydra jobs" in err


@pytest.mark.parametrize("case", ["missing dir", "no finished jobs"])
def test_make_figure_user_errors_give_one_line(case, fig3_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    if case == "no finished jobs":
        shutil.copytree(fig3_sweep / "0" / ".hydra", sweep / "0" / ".hydra")
    result = run_script("make_figure.py", str(sweep))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nst-tf: error: "), result.stderr
    assert str(sweep) in lines[0]


# (experiment, panel group, panel, style, alpha): the paper's ratio for each panel.
PANELS = [
    ("fig2", "panel/fig2", "B", "shipwreck", 1e-3),
    ("fig2", "panel/fig2", "C", "starry", 1e-3),
    ("fig2", "panel/fig2", "D", "scream", 1e-3),
    ("fig2", "panel/fig2", "E", "picasso", 1e-4),
    ("fig2", "panel/fig2", "F", "composition_vii", 1e-4),
    ("cvpr_fig3", "panel/cvpr_fig3", "B", "shipwreck", 1e-3),
    ("cvpr_fig3", "panel/cvpr_fig3", "C", "starry", 8e-4),
    ("cvpr_fig3", "panel/cvpr_fig3", "D", "scream", 5e-3),
    ("cvpr_fig3", "panel/cvpr_fig3", "E", "picasso", 5e-4),
    ("cvpr_fig3", "panel/cvpr_fig3", "F", "composition_vii", 5e-4),
    ("init", "panel/init", "content", "starry", 1e-3),
    ("init", "panel/init", "noise_seed3", "starry", 1e-3),
]


def compose_experiment(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize(("experiment", "group", "panel", "style", "alpha"), PANELS)
def test_panels_set_the_papers_ratios(experiment, group, panel, style, alpha):
    cfg = compose_experiment(f"+experiment={experiment}", f"+{group}={panel}")
    assert cfg.style.name == style and cfg.alpha == pytest.approx(alpha)
    # The printed formulas on the ImageNet weights: what keeps the paper's balance from noise
    assert cfg.model.normalize is False and cfg.loss_scale.name == "paper"
    assert cfg.optimizer.line_search.name == "none"  # no stall here; same-shape panels batch
    assert cfg.hydra.callbacks.sweep_end._target_ == "nst_tf.sweep_callback.SweepEnd"
    sweep = cfg.hydra.sweeper.params[f"+{group}"].split(",")
    assert "E" not in sweep  # Picasso only on request (the experiment's comment says how)
    assert f"experiments/{experiment}/" in cfg.hydra.sweep.dir
    if experiment == "init":
        assert (cfg.init.name, cfg.seed) == (
            ("content", 0) if panel == "content" else ("noise", 3))


def test_picasso_preset_is_downloaded_md5_checked_into_the_cache(server, tmp_path):
    # The preset's download, served from here: the original is not ours to keep in the tests.
    preset = compose_experiment("style=picasso").style
    url = f"{server.url}/{preset.file}"
    stand_in = _stand_in_jpeg()
    (server.root / preset.file).write_bytes(stand_in)
    cache, no_images = tmp_path / "cache", tmp_path / "images"
    no_images.mkdir()
    with pytest.raises(UserError) as refused:  # the preset's md5 is the original's, not this
        resolve_image(compose_experiment("style=picasso", f"style.url={url}").style, "style",
                      no_images, cache)
    assert f"expected {preset.md5}" in str(refused.value)
    assert not any((cache / "images").iterdir())
    served = compose_experiment("style=picasso", f"style.url={url}",
                                f"style.md5={hashlib.md5(stand_in).hexdigest()}").style
    path = resolve_image(served, "style", no_images, cache)
    assert path == cache / "images" / "picasso_femme_nue_assise.jpg"
    assert path.read_bytes() == stand_in and server.hits == [f"/{preset.file}"] * 2
    assert resolve_image(served, "style", no_images, cache) == path  # cached: not fetched again
    assert len(server.hits) == 2


@pytest.mark.network
def test_picasso_preset_downloads_the_original(tmp_path):
    preset = compose_experiment("style=picasso").style
    path = resolve_image(preset, "style", None, tmp_path / "cache")  # md5-checked
    assert md5_file(path) == preset.md5
    width, height = read_rgb(path).size
    assert height > width  # the painting's 92.1 x 73 cm, upright


def _stand_in_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 30, 3), 90, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_fig3_sweeps_layer_sets_then_ratios():
    params = compose_experiment("+experiment=fig3").hydra.sweeper.params
    assert list(params) == ["style_layers", "alpha"]
    assert params.alpha == "1e-5,1e-4,1e-3,1e-2"
    assert " ".join(params.style_layers.split()).count("],") == 4


def test_texture_adds_the_poolings_from_noise_without_content():
    params = compose_experiment("+experiment=texture").hydra.sweeper.params
    assert params["+panel/texture"] == "conv1_1,pool1,pool2,pool3,pool4"
    layers = []
    for panel in params["+panel/texture"].split(","):
        cfg = compose_experiment("+experiment=texture", f"+panel/texture={panel}",
                                 "style=composition_vii")
        layers.append(panel)
        assert list(cfg.style_layers) == layers and list(cfg.content_layers) == []
        assert (cfg.init.name, cfg.optimizer.name) == ("noise", "lbfgs")
        assert cfg.content.file == cfg.style.file == "composition_vii.jpg"  # its shape
    assert compact_layers(layers) == "conv1_1 … pool4"
    params = compose_experiment("+experiment=style_losses_texture").hydra.sweeper.params
    assert params.style_loss == "gram,mrf,histogram,sliced_wasserstein"
    assert params["+panel/texture"] == "pool4"


@pytest.mark.parametrize(("value", "text"), [
    (1e-3, "1e-3"), (8e-4, "8e-4"), (0.01, "1e-2"), (0.5, "0.5"), (1.0, "1"), (12345.0, "1.23e4"),
    (True, "true"), (None, "null"), (3, "3"), (["conv1_1", "conv3_1"], "conv1_1, conv3_1"),
])
def test_format_value(value, text):
    assert format_value(value) == text


def test_compact_layers_only_shortens_consecutive_runs():
    assert compact_layers(["conv2_1", "conv3_1", "conv4_1"]) == "conv2_1 … conv4_1"
    assert compact_layers(["conv4_1", "conv4_2", "conv4_3"]) == "conv4_1 … conv4_3"
    assert compact_layers(["conv1_1", "conv3_1", "conv4_1"]) == "conv1_1, conv3_1, conv4_1"
    assert compact_layers(["conv1_2", "conv2_1", "conv2_2"]) == "conv1_2 … conv2_2"
    assert compact_layers(["conv1_1", "pool1", "pool2"]) == "conv1_1 … pool2"


def test_summary_config_wins_over_hydra_files(fig3_sweep):
    # The resolved config in summary.json is what the figure reads (interpolations done).
    summary = json.loads((fig3_sweep / "0" / "summary.json").read_text())
    assert sweep_grid(fig3_sweep).cells[0][0].config == summary["config"]


def test_loss_table_reads_every_job(fig3_sweep, tmp_path, monkeypatch, capsys):
    # Jobs 3 and 5 of the sweep (two sets of style layers), each scored anew, in this process:
    # the command line's way out and TensorFlow's retracing warning are checked in a process of
    # its own (test_loss_table_json_is_one_list_on_stdout).
    sweep = tmp_path / "two_rows"
    for job in ("3", "5"):
        shutil.copytree(fig3_sweep / job, sweep / job)
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # as the script finds job_table.py
    monkeypatch.setattr(sys, "argv", ["scripts/loss_table.py", str(sweep)])
    runpy.run_path(str(ROOT / "scripts" / "loss_table.py"), run_name="__main__")
    printed = capsys.readouterr().out
    rows = [line.strip("| ").split(" | ") for line in printed.splitlines()[2:]]
    assert [row[0] for row in rows] == ["3", "5"]
    assert "deep style (conv4_1, conv5_1) / photo's" in printed
    assert "likeness to photo | likeness to painting" in printed
    # content over the noise start's: these jobs start from that noise, row 0 of losses.csv
    losses = [line.split(",") for line in (sweep / "5" / "losses.csv").read_text().split()]
    column = losses[0].index("content")
    expected = float(losses[-1][column]) / float(losses[1][column])
    assert float(rows[1][2]) == pytest.approx(expected, abs=1e-3)
    for row in rows:
        style, deep, photo, painting = map(float, row[3:7])
        assert style > 0 and deep > 0 and -1 <= photo <= 1 and -1 <= painting <= 1


def test_loss_table_json_is_one_list_on_stdout(fig3_sweep, tmp_path, images_dir):
    # Jobs 4 and 5 as they ran, and a copy of 5 (as job 6) whose result is the photo itself: 6
    # builds, more than TensorFlow's retracing warning waits for (5), in a fresh process.
    sweep = tmp_path / "one"
    for job in ("4", "5"):
        shutil.copytree(fig3_sweep / job, sweep / job)
    shutil.copytree(fig3_sweep / "5", sweep / "6")
    with Image.open(sweep / "6" / "result.png") as png:
        size = png.size
    pictures = {}
    for name in ["tubingen.jpg", "composition_vii.jpg"]:
        with Image.open(images_dir / name) as picture:
            pictures[name] = picture.convert("RGB").resize(size, Image.Resampling.LANCZOS)
    pictures["tubingen.jpg"].save(sweep / "6" / "result.png")
    result = run_script("loss_table.py", str(sweep), "--json")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "retracing" not in result.stderr  # TensorFlow's warning about the many builds
    first, row, photo_as_result = json.loads(result.stdout)
    assert first["job"] == "4" and first["deep_style_rel"] > 0
    assert set(row) == {"job", "settings", "content_rel", "style_rel", "deep_style_rel",
                        "photo_likeness", "painting_likeness"}
    assert row["job"] == "5" and "alpha=1e-4" in row["settings"]
    assert row["content_rel"] > 0 and row["style_rel"] > 0 and row["deep_style_rel"] > 0
    # The likenesses, with the photo itself as the result: 1 to the photo, and to the painting
    # what the photo and the painting share.
    photo, painting = (np.asarray(pictures[name], np.float64).ravel()
                       for name in ["tubingen.jpg", "composition_vii.jpg"])
    assert photo_as_result["job"] == "6"
    assert photo_as_result["photo_likeness"] == pytest.approx(1, abs=0.01)
    assert photo_as_result["painting_likeness"] == pytest.approx(
        np.corrcoef(photo, painting)[0, 1], abs=0.01)
    assert photo_as_result["painting_likeness"] < 0.9
