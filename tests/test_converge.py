"""A run ends once it has converged (converge.*): the rule's arithmetic, a batch member that
converges alone, the record, the paper's experiments kept at fixed iterations, resume."""

import logging
import re
from types import SimpleNamespace

import numpy as np
import pytest

from nst_tf import compose, pipeline
from nst_tf.compose import attempt, validate
from nst_tf.course import Course, Stage
from nst_tf.loop import Converged
from nst_tf.transfer import optimise_batch
from tests.helpers import compose_config, read_csv, two_from_noise

TINY = ["+debug=tiny", "iterations=12"]
LOSS_ONLY = ["converge.tolerance=1", "converge.change=0"]  # converges once its window is full
OFF = ["converge.tolerance=0", "converge.change=0"]


def run(tmp_path, name, *overrides):
    """An in-process run of the command with `overrides` into tmp_path/name: its summary."""
    return attempt(compose_config(*overrides),
                   pipeline.Where(tmp_path / name, "hydra.run.dir", "nst-tf"), overrides)


class Still:
    """A view whose image is whatever the test sets."""

    def __init__(self) -> None:
        self.image = np.zeros((4, 4, 3), np.float32)

    def result(self) -> np.ndarray:
        return self.image


def test_the_loss_rule_fires_once_the_total_fell_by_at_most_its_share_over_the_window():
    rule, view = Converged(tolerance=0.1, window=2), Still()
    # 100 -> 80 (a fall of 20%) ... 80 -> 75 over the window: 75 / 80 fell 6.25% <= 10%
    fired = [rule(np.array([total]), view) for total in (100.0, 90.0, 80.0, 77.0, 75.0)]
    assert fired == [False, False, False, False, True]
    # The same fall, a window later: 100, 90, 80 fell 20% over two steps, never below.
    assert not any(Converged(0.1, 2)(np.array([t]), view) for t in (100.0, 90.0, 80.0))
    assert Converged.rule(0.0, 50, 0.0) is None  # both off: no rule


def test_the_image_rule_fires_once_the_mean_pixel_change_over_the_window_is_small():
    rule, view = Converged(tolerance=0.0, window=10, change=2.0), Still()
    assert rule.every == 2  # the image is looked at every window / 5 steps
    fired = []
    for step in range(1, 25):
        # 5 px per look-in up to step 12, then 0.3 px: the window of 10 steps spans 5 look-ins
        view.image = view.image + (5.0 if step <= 12 else 0.3) * (step % 2 == 0)
        fired.append(rule(np.array([1.0]), view))
    # At step 20 the image moved by 1.2 px over steps 10..20, but the window holds step 10's
    # image, which is 5 px behind step 12's: 0.3 * 4 + 5 = 6.2 > 2; step 22: 0.3 * 5 = 1.5.
    assert fired.index(True) + 1 == 22


def test_both_rules_on_need_both(tmp_path):
    rule, view = Converged(tolerance=0.01, window=2, change=1.0), Still()
    fired = []
    for total in (100.0, 50.0, 25.0, 24.0, 23.9, 23.8):
        fired.append(rule(np.array([total]), view))  # the image never moves
    assert fired == [False, False, False, False, False, True]


def test_a_converged_member_ends_alone_while_its_batch_mate_goes_on(vgg_weights, images_dir):
    transfer = two_from_noise(vgg_weights, images_dir)

    class Seen:
        def __init__(self) -> None:
            self.steps, self.end = [], None

        def on_step(self, progress, run):
            self.steps.append(progress.iteration)

        def on_end(self, progress, run, status):
            self.end = (progress.iteration, status, run.result().copy())

    seen = [Seen(), Seen()]
    # Member 0 converges as soon as its window is full (any fall is within 100%).
    outcomes, signum = optimise_batch(transfer, 8, [[seen[0]], [seen[1]]], first=10,
                                      done=[Converged(1.0, 3), None])
    assert signum is None and [o.status for o in outcomes] == ["ok", "ok"]
    assert [(o.iteration, o.converged) for o in outcomes] == [(14, True), (18, False)]
    assert seen[0].steps == [10, 11, 12, 13] and seen[1].steps == list(range(10, 18))
    # It ended at its image then, kept while its mate went on.
    np.testing.assert_array_equal(transfer.result(0), seen[0].end[2])
    np.testing.assert_array_equal(transfer.result(1), seen[1].end[2])


def test_a_run_records_why_it_ended(tmp_path, images_dir, caplog):
    converged = tmp_path / "converged"
    with caplog.at_level(logging.INFO, logger="nst_tf"):
        summary = run(tmp_path, "converged", *TINY, *LOSS_ONLY, "converge.window=3")
    assert summary["status"] == "ok", summary["reason"]
    assert summary["ended"] == "converged at iteration 4" and summary["iterations_done"] == 4
    assert summary["stages"][0]["ended"] == "converged at iteration 4"
    assert [r["iteration"] for r in read_csv(converged / "losses.csv")] == [0, 1, 2, 3, 4]
    assert "4 iterations in" in caplog.text and "(converged at iteration 4)" in caplog.text
    summary = run(tmp_path, "full", *TINY, *OFF)
    assert summary["ended"] == "reached iterations" and summary["iterations_done"] == 12

    # A converged run is done: resume= says so, unless the rule is turned off.
    again = run(tmp_path, "again", f"resume={converged}")
    assert again["status"] == "failed" and again["exit_code"] == 2
    assert again["reason"] == (f"resume: {converged} converged at iteration 4, so it is done; "
                               "its result is in that dir (to run on, add converge.tolerance=0 "
                               "converge.change=0)")
    onward = run(tmp_path, "onward", f"resume={converged}", *OFF)
    assert onward["status"] == "ok" and onward["ended"] == "reached iterations"
    assert [r["iteration"] for r in read_csv(tmp_path / "onward" / "losses.csv")] == [
        *range(4), *range(4, 13)]


def test_a_run_stopped_before_it_converged_resumes_with_the_rule(tmp_path, images_dir):
    summary = run(tmp_path, "short", *TINY, "iterations=3", *LOSS_ONLY, "converge.window=5")
    assert summary["ended"] == "reached iterations"  # its window was not yet full
    summary = run(tmp_path, "on", f"resume={tmp_path / 'short'}", "iterations=20")
    # A fresh window from iteration 3: 5 steps, then the image after them.
    assert summary["ended"] == "converged at iteration 9", summary["reason"]


def test_the_paper_experiments_keep_fixed_iterations_and_plain_runs_stop():
    plain = validate(compose_config()).converge
    assert plain.tolerance or plain.change
    for experiment in ("fig2", "fig3", "cvpr_fig3", "init"):
        converge = validate(compose_config(f"+experiment={experiment}")).converge
        assert converge.tolerance == 0 and converge.change == 0, experiment


def test_a_resumed_course_knows_where_a_converged_stage_ended():
    """scales=[32,48,64]: the first stage converged at 2 of its 4 iterations, so the second
    began at update 2 and ends by 5, not 7."""
    settings = SimpleNamespace(scales=[32, 48, 64], size=512, scale_iterations=[4, 3, 5],
                               iterations=500)
    rows = [{"iteration": i, "size": size} for i, size in
            [(0, 32), (1, 32), (2, 32), (2, 48), (3, 48)]]
    course = Course.of(settings, SimpleNamespace(iteration=4, seconds=1.0, rows=rows[:-1],
                                                 last=rows[-1]))
    assert course.starts == (2,) and course.resumed_size == 48
    assert [(leg.stage, leg.iterations, leg.first) for leg in course.legs()] == [
        (Stage(48, 3), 1, 4), (Stage(64, 5), 5, 5)]


@pytest.mark.parametrize("key, value", [("tolerance", -1), ("change", -0.5), ("window", 0)])
def test_a_bad_converge_setting_is_one_line(key, value):
    from nst_tf.errors import UserError

    with pytest.raises(UserError, match=f"converge.{key}={value}"):
        validate(compose_config(f"converge.{key}={value}"))


def test_a_run_from_before_the_stop_rule_resumes_with_it_off(tmp_path, images_dir, capsys):
    """Its settings.yaml has no converge: it took every iteration, and goes on doing so."""
    summary = run(tmp_path, "older", *TINY, "iterations=2")
    assert summary["config"]["converge"]["tolerance"] == 0.01  # today's default, recorded
    settings = tmp_path / "older" / "settings.yaml"
    settings.write_text(re.sub(r"converge:\n(  .*\n)+", "", settings.read_text()))
    summary = run(tmp_path, "on", f"resume={tmp_path / 'older'}", "iterations=3")
    assert summary["status"] == "ok", summary["reason"]
    assert summary["config"]["converge"] == {"tolerance": 0.0, "change": 0.0, "window": 50}
    assert "has no converge.tolerance (written before it existed)" in capsys.readouterr().err


def test_each_scale_of_a_coarse_to_fine_run_may_converge(tmp_path, images_dir):
    summary = run(tmp_path, "c2f", "+debug=tiny", "scales=[32,48]", "scale_iterations=[8,8]",
                  *LOSS_ONLY, "converge.window=3")
    assert summary["status"] == "ok", summary["reason"]
    assert [s["ended"] for s in summary["stages"]] == ["converged at iteration 4",
                                                       "converged at iteration 8"]
    assert summary["ended"] == "converged at iteration 8"
    rows = read_csv(tmp_path / "c2f" / "losses.csv")
    assert [(r["iteration"], r["size"]) for r in rows] == [
        *((i, 32) for i in range(5)), *((i, 48) for i in range(4, 9))]


def test_runs_of_a_batch_converge_apart_at_every_scale(tmp_path, images_dir):
    """One batch of two coarse-to-fine runs: the one that converges counts on from where it
    ended, its mate from where it did."""
    common = ["+debug=tiny", "scales=[32,48]", "scale_iterations=[8,8]"]
    jobs = [compose.job(compose_config(*common, *rule), pipeline.Where(
        tmp_path / name, "hydra.run.dir", "nst-tf"), [*common, *rule])
        for name, rule in (("quick", [*LOSS_ONLY, "converge.window=3"]), ("full", OFF))]
    quick, full = pipeline.attempt_jobs(jobs, 2)
    assert [s["batch"] for s in quick["stages"]] == [2, 2]
    assert quick["ended"] == "converged at iteration 8" and full["ended"] == "reached iterations"
    sizes = {name: [(r["iteration"], r["size"]) for r in read_csv(tmp_path / name / "losses.csv")]
             for name in ("quick", "full")}
    assert sizes["quick"] == [*((i, 32) for i in range(5)), *((i, 48) for i in range(4, 9))]
    assert sizes["full"] == [*((i, 32) for i in range(9)), *((i, 48) for i in range(8, 17))]
