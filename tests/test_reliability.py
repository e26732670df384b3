"""Faults and bad values: no run damages another's files, signals save, divergence stops,
every number is checked, and a sweep survives its failed jobs (docs/RELIABILITY.md)."""

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nst_tf.callbacks import LossLog, Snapshots
from nst_tf.compose import attempt, validate
from nst_tf.ending import failure_message
from nst_tf.errors import Stopped, StopRequest, UserError, WriteError, handling_signals
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import paper_terms
from nst_tf.memory import GIB, Parts, check_memory, estimate_peak
from nst_tf.model import FeatureExtractor
from nst_tf.pictures import initial_image
from nst_tf.pipeline import Where
from nst_tf.resume import load_checkpoint, read_loss_rows
from nst_tf.session import SESSION
from nst_tf.transfer import Diverged, StyleTransfer, Weights, optimise
from tests.helpers import (
    ROOT,
    cli_outcome,
    compose_config,
    figure_size,
    pixels,
    read_csv,
    run_here,
    run_nst,
    start_nst,
    tree_bytes,
    wait_for_rows,
)

TINY = ["+debug=tiny", "iterations=6", "save_every=3"]



# --- every number is checked before anything is built ----------------------------------------

BAD_VALUES = {  # overrides joined by &
    "alpha=nan": "alpha=nan is not a finite number",
    "beta=inf": "beta=inf is not a finite number",
    "alpha=-inf": "alpha=-inf is not a finite number",
    "tv_weight=nan": "tv_weight=nan is not a finite number",
    "optimizer.learning_rate=nan": "optimizer.learning_rate=nan is not a finite",
    "styles=[{preset: starry, weight: nan}]": "styles[0].weight=nan is not a finite",
    "styles=[{preset: starry, scale: inf}]": "styles[0].scale=inf is not a finite",
    "content_layer_weights=[nan]": "content_layer_weights[0]=nan is not a finite",
    "style_scale=nan": "style_scale=nan is not a finite number",
    "style_scale=-1": "style_scale=-1.0 must be > 0",
    "style_scale=100": "keep size x style_scale <= 16384",
    "styles=[{preset: starry, scale: 64}]": "keep size x styles[0].scale <= 16384",
    "seed=-1": "seed=-1 is out of range",
    "seed=4294967296": "seed=4294967296 is out of range",
    "size=100000": "size=100000 is too large",
    "scales=[64,20000]": "scales=20000 is too large",
    "scales=[32,64]&scale_iterations=[10]": "scale_iterations has 1 values for 2 scales",
    "scales=[32,64]&scale_iterations=[10,0]": "scale_iterations=[10, 0] must all be >= 1",
    "optimizer.tolerance_grad=-1": "optimizer.tolerance_grad=-1.0 must be >= 0",
    "optimizer=adam&optimizer.beta_1=1": "optimizer.beta_1=1.0 must be in [0, 1)",
    "optimizer=adam&optimizer.beta_2=-0.1": "optimizer.beta_2=-0.1 must be in [0, 1)",
    "optimizer=adam&optimizer.epsilon=0": "optimizer.epsilon=0.0 must be > 0",
    "optimizer=adam&optimizer.learning_rate=inf": "optimizer.learning_rate=inf is not a finite",
}


@pytest.mark.parametrize("overrides", list(BAD_VALUES))
def test_bad_value_is_refused_in_one_line(overrides):
    with pytest.raises(UserError) as caught:
        validate(compose_config(*overrides.split("&")))
    assert BAD_VALUES[overrides] in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("seed", [0, 2**32 - 1])
def test_seed_range_ends_are_accepted(seed):
    assert validate(compose_config(f"seed={seed}")).seed == seed


# --- memory ----------------------------------------------------------------------------------

def test_memory_check_refuses_what_does_not_fit_and_names_the_fix():
    lbfgs = Parts.of("lbfgs", 50)
    with pytest.raises(UserError) as caught:
        check_memory("size", 4000, (4000, 3000), 4000 * 3000, lbfgs, available=20 * GIB)
    message = str(caught.value)
    assert "size=4000 (4000x3000 px) needs about" in message and "20.0 GiB is available" in message
    fits = int(message.split("use size=")[1].split(" ")[0])
    # The size it proposes does fit, and a size 5% larger would not.
    assert estimate_peak(fits * fits * 3 // 4, fits * fits * 3 // 4, lbfgs) < 20 * GIB
    big = int(fits * 1.05)
    assert estimate_peak(big * big * 3 // 4, big * big * 3 // 4, lbfgs) > 20 * GIB
    assert "optimizer.history_size" in message and "scales=" in message


def test_memory_estimate_grows_with_pixels_and_history():
    lbfgs, adam = Parts.of("lbfgs", 50), Parts.of("adam")
    assert check_memory("size", 512, (512, 384), 512 * 384, lbfgs, available=20 * GIB) > 0
    assert estimate_peak(2_000_000, 0, Parts.of("lbfgs", 100)) > estimate_peak(2_000_000, 0, lbfgs)
    assert estimate_peak(2_000_000, 0, adam) < estimate_peak(2_000_000, 0, Parts.of("lbfgs", 2))
    assert estimate_peak(1, 4_000_000, adam) > estimate_peak(1, 1, adam)


# --- run dirs: no run changes a byte of another's ----------------------------------------------

@pytest.fixture(scope="module")
def finished(tmp_path_factory, images_dir):
    out = tmp_path_factory.mktemp("finished") / "run"
    result = run_nst(*TINY, "alpha=1e-3", f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr
    return out


def test_rerun_into_a_finished_dir_changes_no_byte(finished):
    before = tree_bytes(finished)
    assert ".hydra/config.yaml" in before and "settings.yaml" in before
    result = run_nst(*TINY, "alpha=5", f"hydra.run.dir={finished}")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"nst-tf: error: output dir {finished} already holds an earlier run (settings.yaml, "
        "result.png, losses.csv, summary.json, snapshots, loss_curve.png); continue it with "
        f"resume={finished}, or choose a new dir with hydra.run.dir=..."]
    assert tree_bytes(finished) == before


def _copy(run_dir: Path, to: Path) -> Path:
    for name, data in tree_bytes(run_dir).items():
        (to / name).parent.mkdir(parents=True, exist_ok=True)
        (to / name).write_bytes(data)
    return to


def test_resume_reads_the_runs_own_record(finished, tmp_path):
    copy = _copy(finished, tmp_path / "copy")
    # What the earlier Hydra rewrote; the run's own settings.yaml is what counts.
    (copy / ".hydra" / "config.yaml").write_text("alpha: 5\n")
    out = tmp_path / "resumed"
    assert run_here(out, f"resume={copy}", "iterations=8", "progress=false")["status"] == "ok"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["alpha"] == 1e-3 and summary["status"] == "ok"


def test_rerun_into_a_killed_runs_dir_changes_no_byte(tmp_path, images_dir):
    from tests.test_faults import _start_paused

    out = tmp_path / "killed"
    # killed once its loop has ended, before it saves (the pause point `save`)
    process, _ = _start_paused("save", "+debug=tiny", "iterations=6", "save_every=2",
                               f"hydra.run.dir={out}")
    process.kill()
    process.communicate(timeout=60)
    assert not (out / "result.png").exists() and len(read_csv(out / "losses.csv")) == 7
    before = tree_bytes(out)
    code, line = cli_outcome(out, "+debug=tiny")
    assert code == 2 and "already holds an earlier run" in line, line
    assert tree_bytes(out) == before


def test_sweep_into_an_earlier_sweeps_dir_changes_no_byte(tmp_path, images_dir):
    sweep = tmp_path / "sweep"
    result = run_nst("-m", "alpha=1e-3", "+debug=tiny", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr
    before = tree_bytes(sweep)
    again = run_nst("-m", "alpha=1e-2", "+debug=tiny", f"hydra.sweep.dir={sweep}")
    assert again.returncode == 2
    lines = again.stderr.strip().splitlines()
    assert len(lines) == 1 and "choose a new dir with hydra.sweep.dir=..." in lines[0]
    assert tree_bytes(sweep) == before


# --- signals -----------------------------------------------------------------------------------

def test_a_stop_signal_saves_and_the_run_resumes(tmp_path, images_dir):
    # Ctrl-C; SIGTERM's code and line on the command line: tests/test_faults.py (a still) and
    # test_video.py (a clip), SIGHUP's: test_faults.py, SIGUSR1's: test_launchers.py.
    signum, code = signal.SIGINT, 130
    out = tmp_path / "run"
    process = start_nst("+debug=tiny", "iterations=100000", f"hydra.run.dir={out}")
    wait_for_rows(out / "losses.csv", 3)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    summary = json.loads((out / "summary.json").read_text())
    done = summary["iterations_done"]
    assert summary["status"] == "interrupted" and summary["exit_code"] == code
    assert summary["final"]["iteration"] == done
    assert stderr.strip().splitlines() == [f"nst-tf: {summary['reason']}"]
    assert f"stopped by {signal.Signals(signum).name} at iteration {done}" in stderr
    assert f"resume={out} iterations=100000" in stderr
    # The image of the last iteration done, as the result and as that iteration's snapshot.
    assert Image.open(out / "result.png").size == (32, 24)
    assert np.array_equal(pixels(out / "result.png"),
                          pixels(out / "snapshots" / f"iter_{done:05d}.png"))
    assert read_csv(out / "losses.csv")[-1]["iteration"] == done
    again = tmp_path / "again"
    summary = run_here(again, f"resume={out}", f"iterations={done + 2}")
    assert summary["status"] == "ok", summary["reason"]
    iterations = [row["iteration"] for row in read_csv(again / "losses.csv")]
    # A step cut short by the signal finished unlogged, so one row before `done` may be missing.
    assert iterations == sorted(set(iterations)) and iterations[-3:] == [done, done + 1, done + 2]


@pytest.fixture(scope="module")
def tiny(vgg_weights, images_dir):
    """A 32 px transfer built in this process, and its images."""
    content = to_array(fit_long_side(read_rgb(images_dir / "tubingen.jpg"), 32))
    style = to_array(fit_long_side(read_rgb(images_dir / "starry_night.jpg"), 32))
    extractor = FeatureExtractor(vgg_weights.arrays, "avg", ["conv4_2", "conv1_1", "conv2_1"])

    def build(**lbfgs: float) -> StyleTransfer:
        params = {"history_size": 5, "line_search": "none", "learning_rate": 1.0,
                  "max_line_search": 5, "tolerance_grad": 0.0, "tolerance_change": 0.0, **lbfgs}
        return StyleTransfer(extractor, paper_terms(["conv4_2"], ["conv1_1", "conv2_1"]),
                             content.shape[:2], "lbfgs", params)

    weights = Weights.paper(1e-3, 1.0, 0.0, {"conv4_2": 1.0}, {"conv1_1": 0.5, "conv2_1": 0.5})
    init = initial_image("noise", content, content, 0)
    return build, content, style, init, weights


class Ask:
    """Asks the loop to stop after `after` steps, as a program embedding nst_tf does, and notes
    the handler of SIGUSR1 the loop runs under."""

    def __init__(self, after: int) -> None:
        self.after, self.asked, self.handlers = after, [], set()

    def __call__(self) -> int | None:
        return self.asked[0] if self.asked else None

    def on_step(self, progress, transfer) -> None:
        self.handlers.add(signal.getsignal(signal.SIGUSR1))
        if progress.iteration + 1 == self.after:
            self.asked.append(signal.SIGUSR1)

    def on_end(self, progress, transfer, status) -> None:
        pass


def test_a_stop_request_ends_the_loop_after_saving_and_no_handler_is_touched(tiny, tmp_path):
    build, content, style, init, weights = tiny
    transfer = build()
    transfer.start(content, style, init, weights)
    log = LossLog(tmp_path / "losses.csv", transfer.value_names)
    ask = Ask(3)
    with pytest.raises(Stopped) as caught:
        optimise(transfer, 1000, [log, Snapshots(tmp_path / "snapshots", 0), ask], stop=ask)
    assert caught.value.signum == signal.SIGUSR1 and caught.value.exit_code == 138
    assert caught.value.progress.iteration == 3
    assert (tmp_path / "snapshots" / "iter_00003.png").exists()
    assert [r["iteration"] for r in read_csv(tmp_path / "losses.csv")] == [0, 1, 2, 3]
    assert ask.handlers == {signal.SIG_DFL}  # the core installs no handler, even for a moment


def test_a_driver_puts_the_handlers_back():
    def mine(*_):
        pass

    signal.signal(signal.SIGUSR1, mine)
    try:
        with handling_signals(StopRequest()) as stop:
            assert signal.getsignal(signal.SIGUSR1) == stop.on_signal
            with stop.noted():
                os.kill(os.getpid(), signal.SIGUSR1)  # noted, for the loop to act on
            assert stop() == signal.SIGUSR1
            with pytest.raises(Stopped):  # outside noted(): raised where the program is
                os.kill(os.getpid(), signal.SIGUSR1)
        assert signal.getsignal(signal.SIGUSR1) is mine
    finally:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)


def test_ctrl_c_before_the_first_step_claims_nothing(monkeypatch, tmp_path, images_dir):
    def interrupted_build(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the signal should have stopped the run")

    monkeypatch.setattr(SESSION, "transfer", interrupted_build)
    cfg = compose_config("+debug=tiny")
    with handling_signals(StopRequest()) as stop:  # as the drivers do
        summary = attempt(cfg, Where(tmp_path, "hydra.run.dir", "nst-tf"), [], stop)
    assert summary["status"] == "interrupted" and summary["exit_code"] == 130
    assert summary["reason"] == "stopped by SIGINT before the first step; nothing was saved"
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# --- divergence --------------------------------------------------------------------------------

def test_divergence_keeps_the_last_finite_image(tiny, tmp_path):
    build, content, style, init, weights = tiny
    transfer = build(learning_rate=1e3, max_step=0.0)  # unbounded, far too large: it overflows
    transfer.start(content, style, init, weights)
    log = LossLog(tmp_path / "losses.csv", transfer.value_names)
    with pytest.raises(Diverged) as caught:
        optimise(transfer, 50, [log, Snapshots(tmp_path / "snapshots", 0)])
    last = caught.value.progress
    assert last is not None and caught.value.iteration == last.iteration + 1
    assert np.isfinite(transfer.result()).all()
    # The image put back is the one whose losses were logged last, and they are finite.
    rows = read_csv(tmp_path / "losses.csv")
    assert rows[-1]["iteration"] == last.iteration and np.isfinite(rows[-1]["total"])
    transfer_values = transfer.evaluate()
    assert transfer_values["total"] == pytest.approx(last.values["total"], rel=1e-5)
    # Steps ran before it overflowed; the last finite one's image is the snapshot saved.
    assert last.iteration > 0
    snapshot = to_array(read_rgb(tmp_path / "snapshots" / f"iter_{last.iteration:05d}.png"))
    np.testing.assert_allclose(snapshot, np.clip(transfer.result(), 0, 255), atol=0.5)


def test_a_diverging_run_exits_3_without_a_result(tmp_path, images_dir):
    out = tmp_path / "run"
    result = run_nst("+debug=tiny", "iterations=30", "optimizer.learning_rate=1e3",
                     "optimizer.max_step=0", f"hydra.run.dir={out}")
    assert result.returncode == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "the loss became non-finite at iteration" in lines[0]
    assert not (out / "result.png").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["exit_code"] == 3
    assert all(np.isfinite(v) for v in summary["final"].values())
    # The line is in the run's log too, with the rest of what the run said.
    assert lines[0].removeprefix("nst-tf: ") in (out / "app.log").read_text()


# --- writes that fail ----------------------------------------------------------------------------

def test_a_file_size_limit_gives_one_line_after_the_result(tmp_path, images_dir):
    out = tmp_path / "run"

    def limit() -> None:  # like `ulimit -f 20`: room for the result, not for the loss plot
        resource.setrlimit(resource.RLIMIT_FSIZE, (20 * 1024, resource.RLIM_INFINITY))

    result = subprocess.run(
        [sys.executable, "scripts/run.py", "+debug=tiny", "iterations=3", f"hydra.run.dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=limit,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"nst-tf: error: cannot write {out / 'loss_curve.png'} (File too large); free some "
        f"space or choose another dir with hydra.run.dir=...; the result is in {out}/result.png"]
    assert pixels(out / "result.png").shape == (24, 32, 3)  # written first, and whole: decoded
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_write_errors_name_the_setting_that_places_the_file(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    where = Where(out, "hydra.sweep.dir", "nst-tf")
    message = failure_message(WriteError(out / "result.png", "No space left on device"),
                              where, str(cache))
    assert message.endswith("choose another dir with hydra.sweep.dir=...")
    assert failure_message(WriteError(cache / "weights" / "x.npz", "Disk quota exceeded"),
                           where, str(cache)).endswith("cache dir with paths.cache=...")


# --- resume from damaged files -----------------------------------------------------------------

def _damaged_losses(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "losses.csv"
    path.write_text(text)
    return path


HEADER = "iteration,seconds,total,content,style,tv,size\n"


@pytest.mark.parametrize("text, expected", [
    (HEADER + "0,0.1,5,4,3,2,32\n1,0.2,oops,4,3,2,32\n", "line 3 is not all numbers"),
    (HEADER + "0,0.1,5,4,3,2,32\n1,0.2,4\n", "line 3 is not all numbers"),
    (HEADER + "0,0.1,nan,4,3,2,32\n", "line 2 is not all finite numbers"),
    ("iteration,total\n0,1\n", "its header is not iteration,seconds,"),
    ("\x00\xff\xfe", "its header is not"),
])
def test_a_damaged_loss_log_is_refused_in_one_line(tmp_path, text, expected):
    with pytest.raises(UserError) as caught:
        read_loss_rows(_damaged_losses(tmp_path, text))
    assert expected in str(caught.value) and "move it away" in str(caught.value)


def test_resume_falls_back_past_a_damaged_snapshot(tmp_path, capsys):
    snapshots = tmp_path / "snapshots"
    snapshots.mkdir()
    Image.fromarray(np.full((24, 32, 3), 90, np.uint8)).save(snapshots / "iter_00003.png")
    whole = (snapshots / "iter_00003.png").read_bytes()
    (snapshots / "iter_00006.png").write_bytes(whole[: len(whole) // 2])
    _damaged_losses(tmp_path, HEADER + "".join(f"{i},{i},5,4,3,2,32\n" for i in range(7)))
    checkpoint = load_checkpoint(str(tmp_path))
    assert checkpoint.iteration == 3 and [r["iteration"] for r in checkpoint.rows] == [0, 1, 2]
    assert "snapshot iter_00006.png is damaged; continuing from iter_00003.png" in (
        capsys.readouterr().err)
    (snapshots / "iter_00003.png").write_bytes(b"")
    with pytest.raises(UserError, match="every snapshot in .* is damaged"):
        load_checkpoint(str(tmp_path))


def test_resume_of_a_damaged_run_is_one_line(finished, tmp_path):
    copy = _copy(finished, tmp_path / "copy")
    with open(copy / "losses.csv", "a") as file:
        file.write("7,0.5,not-a-number\n")
    code, line = cli_outcome(tmp_path / "out", f"resume={copy}", "iterations=9")
    assert code == 2 and "\n" not in line and "losses.csv is damaged (line" in line, line


# --- sweeps --------------------------------------------------------------------------------------

def test_a_sweep_runs_every_job_and_exits_non_zero(tmp_path, images_dir):
    sweep = tmp_path / "sweep"
    result = run_nst("-m", "alpha=1e-3,-1,1e-2", "+debug=tiny", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 1, result.stderr
    assert (sweep / "0" / "result.png").exists() and (sweep / "2" / "result.png").exists()
    failed = json.loads((sweep / "1" / "summary.json").read_text())
    assert failed["status"] == "failed" and "alpha=-1.0 is negative" in failed["reason"]
    rows = (sweep / "sweep.csv").read_text().splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == ["ok", "failed", "ok"]
    assert figure_size(sweep / "figure.png")  # decoded whole, its PDF twin beside it
    assert "sweep: 3 jobs, 2 ok, 1 failed" in result.stdout + result.stderr


def test_sigterm_during_a_sweep_saves_the_job_and_skips_the_rest(tmp_path, images_dir):
    sweep = tmp_path / "sweep"
    process = start_nst("-m", "alpha=1e-3,1e-2,1e-1", "+debug=tiny", "iterations=100000",
                        f"hydra.sweep.dir={sweep}")
    wait_for_rows(sweep / "0" / "losses.csv", 3)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    statuses = [json.loads((sweep / job / "summary.json").read_text())["status"]
                for job in ("0", "1", "2")]
    assert statuses == ["interrupted", "skipped", "skipped"]
    # The stopped job saved the image it stopped at; the table records all three.
    done = json.loads((sweep / "0" / "summary.json").read_text())["final"]["iteration"]
    assert np.array_equal(pixels(sweep / "0" / "result.png"),
                          pixels(sweep / "0" / "snapshots" / f"iter_{done:05d}.png"))
    rows = (sweep / "sweep.csv").read_text().splitlines()
    assert [row.split(",")[2] for row in rows[1:]] == statuses
