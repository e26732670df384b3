"""Video: a clip stylised frame by frame with the temporal loss of Ruder, Dosovitskiy & Brox
(2016). Each frame is one run of the shared compiled step: its content is the frame, its
temporal targets the earlier results warped into it by optical flow where the flow is
reliable, and it starts from the previous result warped (a frame from init goes through any
coarser scales first). Frames are written as they finish; a stop saves the frame in progress,
and resume= continues with it, never redoing a finished one (nst_tf.video_resume). With
video.passes > 1, Ruder et al.'s later passes follow (nst_tf.video_passes)."""

import dataclasses
import logging
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from nst_tf import video_passes as passes
from nst_tf.callbacks import LossLog, ProgressBar, Snapshots
from nst_tf.clips import Clip, frame_name, is_clip, open_clip, write_video
from nst_tf.config import FrameStart
from nst_tf.errors import pause_point, stop_signals_noted
from nst_tf.images import save_png
from nst_tf.objective import frames_back, loss_weights
from nst_tf.pictures import Scaled, initial_image
from nst_tf.report import plot_frames, read_losses
from nst_tf.resume import resumed_config
from nst_tf.rundir import resume_override, write_settings
from nst_tf.runner import Job, Prepared, prepare, upsampled
from nst_tf.session import SESSION, Session
from nst_tf.transfer import Member, Outcome, StyleTransfer, Weights, optimise_batch
from nst_tf.video_passes import Frames
from nst_tf.video_resume import SNAPSHOT, image_from, take_over

log = logging.getLogger("nst_tf")


def is_video(cfg: DictConfig) -> bool:
    """A clip file as content.path, frames with video.enabled, or resume= of a video run."""
    if cfg.get("resume"):
        return (Path(cfg.resume).expanduser() / "frames").is_dir()
    path = OmegaConf.select(cfg, "content.path")
    return bool(OmegaConf.select(cfg, "video.enabled") or (path and is_clip(path)))


class FlatLoss:
    """Ends a frame once its total fell by less than `tolerance` (a share) over `window`
    iterations: Ruder et al.'s stopping rule."""

    def __init__(self, tolerance: float, window: int) -> None:
        self.tolerance, self.window, self.totals = tolerance, window, []

    def __call__(self, rows: np.ndarray) -> bool:
        self.totals.append(float(rows[0, 0]))
        if not self.tolerance or len(self.totals) <= self.window:
            return False
        before, now = self.totals[-1 - self.window], self.totals[-1]
        return (before - now) <= self.tolerance * abs(before)


def run_video(job: Job, session: Session = SESSION) -> int | None:
    """Stylise the clip `job` asks for into its dir; its summary says how it ended. Returns the
    stop signal that ended it early, if any."""
    cfg, earlier = job.cfg, None
    if cfg.get("resume"):
        earlier = Path(cfg.resume).expanduser()
        cfg = resumed_config(cfg, earlier, job.overrides)
        cfg.resume = None  # this run starts fresh in its own dir, from the earlier frames
    cfg.video.enabled = True
    job.cfg = cfg
    with open_clip(cfg.content.path, cfg.video.fps) as clip:  # its reader ends with the run
        return _stylise(job, clip, earlier, session)


@dataclass
class Course:
    """What every frame of a run shares: the job, the compiled step, the video's course, the
    loss rows the log begins with, the content frames flows still need, stop signals noted."""

    job: Job
    p: Prepared
    transfer: StyleTransfer
    plan: Frames
    weights: Weights
    clip: Clip
    rows: list[dict[str, float]]
    late: list[int]
    session: Session = SESSION
    contents: dict[int, np.ndarray] = field(default_factory=dict)
    logging: bool = False  # losses.csv begun by this run
    coarse_steps: dict[int, StyleTransfer] = field(default_factory=dict)  # by size

    def frame(self, index: int, size: int | None = None) -> Scaled:
        """Frame `index` at `size` (default: the clip's, the run's last scale)."""
        picture = dataclasses.replace(self.p.pictures,
                                      content=Image.fromarray(self.clip.frame(index)))
        frame = picture.at_size(size or self.p.schedule.stages[-1].size,
                                self.p.settings.color.value)
        if size is None:
            self.contents[index] = frame.content_rgb
        return frame

    def tag(self, index: int, pass_no: int) -> dict[str, int]:
        """A frame's leading columns in losses.csv and its record: the pass only if several."""
        return {"pass": pass_no, "frame": index} if self.plan.passes > 1 else {"frame": index}


def _stylise(job: Job, clip: Clip, earlier: Path | None, session: Session) -> int | None:
    p = prepare(job, session, content=Image.fromarray(clip.frame(0)))
    settings, out, video = p.settings, p.out, p.settings.video
    count = min(clip.info.frames, video.frames or clip.info.frames)
    final = p.schedule.stages[-1]  # the clip's size; any scales before it are coarse
    first_iterations = video.iterations_first or final.iterations
    later = video.iterations or max(1, first_iterations // 2)
    plan = Frames(count, first_iterations, later, passes=video.passes,
                  pass_iterations=video.pass_iterations or later,
                  coarse=p.schedule.stages[:-1])
    results: dict[int, np.ndarray] = {}
    rows: list[dict[str, float]] = []
    job.summary.update(frames=[], passes=[])
    if earlier:
        plan, results, rows = take_over(earlier, out, plan, p)
    job.summary["video"] = {"frames": count, "fps": clip.info.fps, "size": clip.info.size,
                            "first": plan.done, "passes": plan.passes}
    job.claimed = True
    write_settings(out, job.cfg)
    shape = p.pictures.at_size(final.size, settings.color.value).content.shape[:2]
    transfer, _ = session.transfer(settings, p.weights, shape, len(p.pictures.masks),
                                   tile=final.tile)
    late: list[int] = []
    course = Course(job, p, transfer, plan, loss_weights(settings), clip, rows, late, session)
    with stop_signals_noted(late):  # between frames too: the finished ones are saved
        for pass_no in range(plan.passes_done + 1, plan.passes + 1):
            finished, signum = _pass(course, pass_no, results)
            if not finished:
                return signum
        _finish(job, out, count, clip.info.fps)
    return late[0] if late else None


def _pass(c: Course, pass_no: int, results: dict[int, np.ndarray]) -> tuple[bool, int | None]:
    """One pass over the clip (the first: Ruder et al.'s single pass); whether it finished,
    and the stop signal that ended the run, if any."""
    plan, p, video = c.plan, c.p, c.p.settings.video
    later = pass_no > 1
    if later:
        results.clear()  # the pass before's: neighbours come from this pass
    indices = passes.order(pass_no, plan.count, 0 if later else plan.done)
    folder = passes.staging(p.out, pass_no) if later else p.out / "frames"
    what = f"pass {pass_no}/{plan.passes}" if plan.passes > 1 else "frames"
    bar = tqdm(total=plan.count, initial=plan.count - len(indices), desc=what, unit="frame",
               dynamic_ncols=True) if p.settings.progress else None
    started = time.perf_counter()
    for made, index in enumerate(indices, 1):
        frame = c.frame(index)
        previous = _previous(c, index, frame.content_rgb, results, passes.direction(pass_no))
        first = 0 if later or index != plan.done else plan.started
        start = (passes.blended(image_from(p, p.out / "frames" / frame_name(index)), previous,
                         video.blend) if later else _start(c, index, frame, previous, first))
        image, signum = _make_frame(c, index, frame, start, previous, pass_no, first, folder)
        if image is None:
            return False, signum
        results[index] = image
        _forget_far(results, index, video)
        if bar is not None:
            bar.update(1)
        log.info("%s: frame %d/%d: %d iterations; %s", what, index + 1, plan.count,
                 c.job.summary["frames"][-1]["iterations"],
                 _time_left(time.perf_counter() - started, made, len(indices) - made))
    if bar is not None:
        bar.close()
    if later:
        passes.commit(p.out, pass_no, plan.count)
    c.job.summary["passes"].append({"pass": pass_no, "direction": "forward" if passes.direction(
        pass_no) > 0 else "backward", "seconds": time.perf_counter() - started})
    return True, None


def _make_frame(c: Course, index: int, frame: Scaled, start: np.ndarray | None, previous,
                pass_no: int, first: int, folder: Path) -> tuple[np.ndarray | None, int | None]:
    """Optimise frame `index` from `start` (None: from init through the coarse scales), tied
    to `previous`, and write it into `folder`. Returns its result; None, with the stop signal
    if any, once the run has ended here."""
    p = c.p
    if c.late:
        _ended(c, Outcome("interrupted", first, None), c.late[0], index, pass_no)
        return None, c.late[0]
    coarse: list[dict[str, float]] = []
    if start is None:
        start, ended = _coarse_to_fine(c, index, frame.content.shape[:2], coarse)
        if start is None:
            _ended(c, *ended, index, pass_no)
            return None, ended[1]
    c.transfer.start_batch([_member(c, frame, start, previous)])
    outcome, signum = _optimise(c, index, frame, pass_no, first)
    pause_point("save", lambda: bool(c.late))
    image = c.transfer.result(0)
    if outcome.status == "ok":
        save_png(folder / frame_name(index), p.show(image, frame.content_rgb))
        shutil.rmtree(p.out / SNAPSHOT.format(index), ignore_errors=True)
    progress = outcome.progress
    c.job.summary["frames"].append({
        **c.tag(index, pass_no), "status": outcome.status, "iterations": outcome.iteration,
        "seconds": progress.seconds if progress else None,
        "final": dict(progress.values) if progress else None, **(
            {"coarse": coarse} if coarse else {})})
    signum = signum or (c.late[0] if c.late else None)
    if outcome.status != "ok" or signum is not None:
        _ended(c, outcome, signum, index, pass_no)
        return None, signum
    return image, None


def _previous(c: Course, index: int, frame: np.ndarray, results: dict[int, np.ndarray],
              step: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The results already made of the frames 1 (2, 4) before frame `index` in the pass's
    direction (`step` ±1), warped into it, with their reliability weights."""
    from nst_tf.flow import long_term_weights, optical_flow, reliability, warp

    video = c.p.settings.video
    warped, reliable = [], []
    for back in frames_back(video):
        other = index - step * back
        if other not in results:
            break
        before = c.contents.get(other)
        if before is None:
            before = c.frame(other).content_rgb
        backward = optical_flow(frame, before, video.flow.value)
        forward = optical_flow(before, frame, video.flow.value)
        warped.append(warp(results[other], backward))
        reliable.append(reliability(backward, forward, video.mask_smoothing))
    _forget_far(c.contents, index, video)
    weights = long_term_weights(reliable) if video.long_term else reliable
    return list(zip(warped, weights, strict=True))


def _forget_far(kept: dict[int, np.ndarray], index: int, video) -> None:
    """Drop what the frames after `index` in a pass no longer tie to (long-term: 4 away)."""
    for old in [k for k in kept if abs(k - index) > max(frames_back(video))]:
        del kept[old]


def _member(c: Course, frame: Scaled, start: np.ndarray, previous=()) -> Member:
    return Member(frame.content, list(zip(frame.styles, c.p.pictures.blend, strict=True)),
                  start, c.weights, frame.masks, previous)


def _start(c: Course, index: int, frame: Scaled, previous, first: int) -> np.ndarray | None:
    """A first-pass frame's first image: the snapshot it was stopped at (`first` iterations
    in), the previous result warped (Ruder et al.), or the run's init; None for the init
    through the coarse scales (`scales=[...]`), which _coarse_to_fine runs."""
    if first:
        return image_from(c.p, c.p.out / SNAPSHOT.format(index) / f"iter_{first:05d}.png")
    if previous and c.p.settings.video.start == FrameStart.warped:
        return previous[0][0]
    return None if c.plan.coarse else _initial(c, index, frame)


def _initial(c: Course, index: int, frame: Scaled) -> np.ndarray:
    """The run's init for frame `index`, its noise drawn from seed + index (so that frame 0
    starts as a still image with that seed would)."""
    settings = c.p.settings
    return initial_image(settings.init.value, frame.content, frame.stretched,
                         settings.seed + index, settings.model.backbone)


def _coarse_to_fine(c: Course, index: int, shape: tuple[int, int], records: list[dict[str, float]]
                    ) -> tuple[np.ndarray | None, tuple[Outcome, int | None]]:
    """Frame `index` from init through the coarse scales, each starting from the one before
    upsampled, as a still run goes; the result upsampled to `shape`, the clip's size (None, and
    how the run ended, after a stop). These steps read no earlier frame: the temporal targets
    are at the clip's size, where the frame goes on. Each scale's step is kept for the next
    frame that starts from init."""
    settings, image, outcome, signum = c.p.settings, None, Outcome("ok", 0, None), None
    for stage in c.plan.coarse:
        frame = c.frame(index, stage.size)
        at = frame.content.shape[:2]
        if stage.size not in c.coarse_steps:
            c.coarse_steps[stage.size] = c.session.build(
                settings, c.p.weights, at, len(c.p.pictures.masks), tile=stage.tile)
        transfer = c.coarse_steps[stage.size]
        transfer.start_batch([_member(c, frame, _initial(c, index, frame) if image is None
                                      else upsampled(image, at))])
        bar = [ProgressBar(stage.iterations, description=f"frame {index + 1} at {stage.size} px",
                           position=1)] if settings.progress else []
        (outcome,), signum = optimise_batch(transfer, stage.iterations, [bar])
        if outcome.status != "ok" or signum is not None:
            if signum is not None or outcome.status == "interrupted":
                # nothing of the frame is saved: resume= makes it again from init
                outcome = dataclasses.replace(outcome, status="interrupted", iteration=0)
            return None, (outcome, signum)
        image = transfer.result(0)
        records.append({"size": stage.size, "iterations": outcome.iteration,
                        "seconds": outcome.progress.seconds})
    return upsampled(image, shape), (outcome, signum)


def _optimise(c: Course, index: int, frame: Scaled, pass_no: int, first: int
              ) -> tuple[Outcome, int | None]:
    """Run a frame's iterations left, with its loss rows (one losses.csv for the clip, begun
    by the run's first frame), the snapshots of the frame in progress, its progress bar."""
    p, video = c.p, c.p.settings.video
    left = c.plan.iterations_of(index, pass_no) - first
    if left <= 0:  # stopped while its last image was being saved: it is done
        return Outcome("ok", first, None), None
    losses = LossLog(p.out / "losses.csv", c.transfer.value_names,
                     () if c.logging else c.rows, tag=c.tag(index, pass_no),
                     new_file=not c.logging)
    c.logging = True

    def show(image: np.ndarray) -> np.ndarray:
        return p.show(image, frame.content_rgb)

    callbacks: list = [losses, Snapshots(p.out / SNAPSHOT.format(index), p.settings.save_every,
                                       show)]
    if p.settings.progress:
        callbacks.append(ProgressBar(left, description=f"frame {index + 1}", position=1))
    outcomes, signum = optimise_batch(c.transfer, left, [callbacks], first,
                                      done=FlatLoss(video.tolerance, video.window))
    return outcomes[0], signum


def _ended(c: Course, outcome: Outcome, signum: int | None, index: int, pass_no: int) -> None:
    """The record of a video that stopped or failed at frame `index` of pass `pass_no`."""
    out, summary, job = c.p.out, c.job.summary, c.job
    at = f"frame {index + 1}" + (f" of pass {pass_no}" if c.plan.passes > 1 else "")
    if signum is not None or outcome.status == "interrupted":
        signum = signum or signal.SIGTERM
        progress = " and the frame in progress" if outcome.iteration else ""
        kept = (f"saved {index} finished frames{progress}" if pass_no == 1 else
                f"frames/ holds pass {pass_no - 1}, whole (resume= begins pass {pass_no} again)")
        summary.update(status="interrupted", interrupted=True, exit_code=128 + signum, reason=(
            f"stopped by {signal.Signals(signum).name} at {at} (iteration {outcome.iteration}); "
            f"{kept} in {out}; continue with: {job.where.command} {resume_override(out)}"))
    elif outcome.status == "diverged":
        summary.update(exit_code=3, reason=(
            f"the loss became non-finite at {at}, iteration {outcome.iteration}; "
            "lower the loss weights or video.temporal_weight"))
    else:
        summary.update(exit_code=2, reason=str(outcome.error))
    _plot(out)


def _finish(job: Job, out: Path, count: int, fps: float) -> None:
    """result.mp4 from every frame, the per-frame plot, and the record."""
    write_video([out / "frames" / frame_name(i) for i in range(count)], out / "result.mp4", fps)
    if (out / "snapshots").is_dir() and not any((out / "snapshots").iterdir()):
        (out / "snapshots").rmdir()  # every frame finished: no frame in progress to keep
    _plot(out)
    last = job.summary["video"]["passes"]
    finals = [f["final"] for f in job.summary["frames"] if f["final"] and f.get("pass", 1) == last]
    job.summary.update(status="ok", reason=None, exit_code=0, iterations_done=sum(
        f["iterations"] for f in job.summary["frames"]))
    if finals:  # what a sweeper reads: the mean over the frames made here in the last pass
        job.summary["final"] = {k: float(np.mean([f[k] for f in finals])) for k in finals[0]}
    log.info("%d frames at %.3g fps; wrote %s", count, fps, out / "result.mp4")


def _plot(out: Path) -> None:
    if (out / "losses.csv").is_file():
        plot_frames(read_losses(out / "losses.csv"), out / "frame_losses.png")


def _time_left(spent: float, made: int, left: int) -> str:
    each = spent / max(made, 1)
    return f"{each:.1f} s a frame, about {each * left / 60:.1f} min to go" if left else "done"
