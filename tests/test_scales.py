"""Coarse to fine: scales=[a,b] optimises at each size, starting from the previous result,
scale_iterations=[m,n] times at each."""

import json
import signal

import numpy as np
import pytest
from PIL import Image

from nst_tf.errors import UserError
from nst_tf.images import read_rgb, to_array
from tests.helpers import FAST, pixels, read_csv, run_here, run_nst


def small(path, size) -> np.ndarray:
    return to_array(read_rgb(path).resize(size, Image.Resampling.LANCZOS)).ravel()


def test_two_scales_end_to_end(tmp_path, images_dir):
    out = tmp_path / "c2f"
    summary = run_here(out, "scales=[32,64]", "scale_iterations=[10,15]", "save_every=10",
                       "init=noise", *FAST)
    assert summary["status"] == "ok", summary["reason"]
    assert Image.open(out / "result.png").size == (64, 48)
    assert Image.open(out / "scale_00032.png").size == (32, 24)
    rows = read_csv(out / "losses.csv")
    assert [int(r["size"]) for r in rows] == [32] * 11 + [64] * 16
    assert [r["iteration"] for r in rows] == list(range(11)) + list(range(10, 26))
    stages = json.loads((out / "summary.json").read_text())["stages"]
    assert [s["content_size"] for s in stages] == [[32, 24], [64, 48]]

    # The fine result keeps the coarse one's layout: closer to it than a run from noise is.
    plain = tmp_path / "plain"
    other_run = run_here(plain, "size=64", "iterations=15", "init=noise", "seed=1", *FAST)
    assert other_run["status"] == "ok"
    coarse = small(out / "scale_00032.png", (32, 24))
    fine = small(out / "result.png", (32, 24))
    other = small(plain / "result.png", (32, 24))
    assert np.corrcoef(coarse, fine)[0, 1] > np.corrcoef(coarse, other)[0, 1] + 0.1


def test_a_coarse_to_fine_run_stopped_between_scales_resumes_with_the_rest(tmp_path):
    """Ctrl-C once the first scale is saved: a true stop line with the command that continues,
    and resume= goes on at the next scale from the saved one (issue 32, case 1)."""
    from tests.test_faults import _finish, _start_paused

    out, again = tmp_path / "run", tmp_path / "again"
    process, said = _start_paused("leg", "scales=[32,48]", "scale_iterations=[4,3]",
                                  "precision=fp32", *FAST, f"hydra.run.dir={out}")
    process.send_signal(signal.SIGINT)
    code, ours = _finish(process, said)
    summary = json.loads((out / "summary.json").read_text())
    assert code == 130 and summary["exit_code"] == 130 and summary["iterations_done"] == 4
    assert ours[-1] == (f"nst-tf: stopped by SIGINT at iteration 4; saved the image, a snapshot "
                        f"and the losses in {out}; continue with: python scripts/run.py "
                        f"resume={out}")
    assert (out / "scale_00032.png").is_file() and not (out / "scale_00048.png").exists()
    result = run_nst(f"resume={out}", f"hydra.run.dir={again}")
    assert result.returncode == 0, result.stderr
    rows = read_csv(again / "losses.csv")
    assert [(r["iteration"], r["size"]) for r in rows] == [
        *((i, 32) for i in range(4)), *((i, 48) for i in range(4, 8))]
    assert Image.open(again / "result.png").size == (48, 36)
    resumed = json.loads((again / "summary.json").read_text())
    assert resumed["stages"][0]["size"] == 48
    # It went on from the image the first scale saved, its snapshot at the stop.
    assert resumed["resumed_from"] == str(out / "snapshots" / "iter_00004.png")
    assert np.array_equal(pixels(out / "snapshots" / "iter_00004.png"),
                          pixels(out / "scale_00032.png"))


def test_a_resumed_course_picks_up_in_the_stage_it_stopped_in(tmp_path):
    from types import SimpleNamespace

    from nst_tf.course import Course, Stage

    settings = SimpleNamespace(scales=[32, 48, 64], size=512, scale_iterations=[4, 3, 5],
                               iterations=500)

    def resumed(iteration: int) -> Course:
        return Course.of(settings, SimpleNamespace(iteration=iteration, seconds=1.5, rows=[],
                                                   last=None))

    inside, between = resumed(6), resumed(4)
    assert [(leg.stage.size, leg.iterations, leg.first) for leg in inside.legs()] == [
        (48, 1, 6), (64, 5, 7)]
    assert inside.resumed_size == 48 and between.resumed_size == 32
    assert [(leg.stage, leg.iterations, leg.first) for leg in between.legs()] == [
        (Stage(48, 3), 3, 4), (Stage(64, 5), 5, 7)]
    assert resumed(12).legs() == [] and resumed(0).legs()[0].iterations == 4
    (tmp_path / "result.png").touch()
    (tmp_path / "summary.json").write_text('{"status": "ok"}')
    with pytest.raises(UserError, match="already ran 12 iterations; its result is in that dir"):
        resumed(12).check_resumable(tmp_path, False)
    (tmp_path / "summary.json").write_text('{"status": "failed"}')  # its outputs failed:
    resumed(12).check_resumable(tmp_path, False)  # resume= writes them, running nothing
