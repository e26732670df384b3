"""Video: a clip stylised frame by frame with the temporal loss of Ruder, Dosovitskiy & Brox
(2016). This driver only makes each frame's course and targets; the loop (nst_tf.loop) walks
it. A frame's content is the frame, its temporal targets the earlier results warped into it by
optical flow where the flow is reliable; it starts from the previous result warped (a frame
from init goes through any coarser scales first). Frames are written as they finish; a stop
saves the frame in progress, and resume= continues with it, never redoing a finished one
(nst_tf.video_resume). With video.passes > 1, Ruder et al.'s later passes follow
(nst_tf.video_passes)."""

import dataclasses
import logging
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from nst_tf import video_passes as passes
from nst_tf.callbacks import LossLog, ProgressBar, Snapshots, is_terminal
from nst_tf.clips import Clip, frame_name, open_clip
from nst_tf.config import FrameStart
from nst_tf.course import Course, Leg, Stage
from nst_tf.errors import StopRequest
from nst_tf.images import save_png
from nst_tf.jobs import Composed, Job, Prepared
from nst_tf.loop import Converged, walk
from nst_tf.objective import loss_weights
from nst_tf.pictures import Scaled, initial_image
from nst_tf.rundir import write_settings
from nst_tf.runner import prepare
from nst_tf.session import SESSION, Session
from nst_tf.transfer import Member, Outcome, StyleTransfer, Weights
from nst_tf.video_passes import Frames
from nst_tf.video_record import clip_ended, clip_finished, time_left
from nst_tf.video_resume import SNAPSHOT, image_from, take_over
from nst_tf.video_targets import forget_far, previous_results

log = logging.getLogger("nst_tf")


def run_video(job: Job, composed: Composed, stop: StopRequest, session: Session = SESSION
              ) -> None:
    """Stylise the clip `job` asks for into its dir; its summary says how it ended."""
    settings = composed.settings
    with open_clip(settings.content.path, settings.video.fps,
                   settings.video.allow_short) as clip:  # read until the run ends
        _stylise(job, composed, clip, stop, session)


@dataclass
class ClipRun:
    """What every frame of a run shares: the job, the clip's step, its course of frames, the
    loss rows the log begins with, the content frames flows still need, the stop request."""

    job: Job
    p: Prepared
    transfer: StyleTransfer
    plan: Frames
    weights: Weights
    clip: Clip
    rows: list[dict[str, float]]
    stop: StopRequest
    session: Session = SESSION
    contents: dict[int, np.ndarray] = field(default_factory=dict)
    logging: bool = False  # losses.csv begun by this run
    coarse_steps: dict[int, StyleTransfer] = field(default_factory=dict)  # by size

    def frame(self, index: int, size: int | None = None) -> Scaled:
        """Frame `index` at `size` (default: the clip's, the run's last scale)."""
        picture = dataclasses.replace(self.p.pictures,
                                      content=Image.fromarray(self.clip.frame(index)))
        frame = picture.at_size(size or self.p.course.stages[-1].size,
                                self.p.settings.color.value)
        if size is None:
            self.contents[index] = frame.content_rgb
        return frame

    def tag(self, index: int, pass_no: int) -> dict[str, int]:
        """A frame's leading columns in losses.csv and its record: the pass only if several."""
        return {"pass": pass_no, "frame": index} if self.plan.passes > 1 else {"frame": index}

    def build(self, stage: Stage, shape: tuple[int, int], batch: int
              ) -> tuple[StyleTransfer, bool]:
        """The clip's step at its size; a coarse scale's, kept for the next frame from init."""
        if stage.size == self.p.course.stages[-1].size:
            return self.transfer, True
        if stage.size not in self.coarse_steps:
            self.coarse_steps[stage.size] = self.session.build(
                self.p.settings, self.p.weights, shape, len(self.p.pictures.masks),
                tile=stage.tile)
        return self.coarse_steps[stage.size], True


def _stylise(job: Job, composed: Composed, clip: Clip, stop: StopRequest, session: Session
              ) -> None:
    earlier = composed.earlier
    p = prepare(job, composed, session, content=Image.fromarray(clip.frame(0)))
    settings, out, video = p.settings, p.out, p.settings.video
    count = min(clip.info.frames, video.frames or clip.info.frames)
    final = p.course.stages[-1]  # the clip's size; any scales before it are coarse
    first_iterations = video.iterations_first or final.iterations
    later = video.iterations or max(1, first_iterations // 2)
    plan = Frames(count, first_iterations, later, passes=video.passes,
                  pass_iterations=video.pass_iterations or later,
                  coarse=p.course.stages[:-1])
    results: dict[int, np.ndarray] = {}
    rows: list[dict[str, float]] = []
    job.summary.update(frames=[], passes=[])
    if earlier:
        plan, results, rows = take_over(earlier, out, plan, p)
    job.summary["video"] = {"frames": count, "fps": clip.info.fps, "size": clip.info.size,
                            "first": plan.done, "passes": plan.passes,
                            "stated_frames": clip.info.stated_frames}
    job.claimed = True
    write_settings(out, settings)
    shape = p.pictures.at_size(final.size, settings.color.value).content.shape[:2]
    transfer, _ = session.transfer(settings, p.weights, shape, len(p.pictures.masks),
                                   tile=final.tile)
    run = ClipRun(job, p, transfer, plan, loss_weights(settings), clip, rows, stop, session)
    with stop.noted():  # between frames too: the finished ones are saved
        for pass_no in range(plan.passes_done + 1, plan.passes + 1):
            if not _pass(run, pass_no, results):
                return
        clip_finished(job, out, count, clip.info.fps)


def _pass(c: ClipRun, pass_no: int, results: dict[int, np.ndarray]) -> bool:
    """One pass over the clip (the first: Ruder et al.'s single pass); whether it finished."""
    plan, p, video = c.plan, c.p, c.p.settings.video
    later = pass_no > 1
    if later:
        results.clear()  # the pass before's: neighbours come from this pass
    indices = passes.order(pass_no, plan.count, 0 if later else plan.done)
    folder = passes.staging(p.out, pass_no) if later else p.out / "frames"
    what = f"pass {pass_no}/{plan.passes}" if plan.passes > 1 else "frames"
    # Off a terminal each frame's log line says the same, once.
    bar = tqdm(total=plan.count, initial=plan.count - len(indices), desc=what, unit="frame",
               dynamic_ncols=True) if p.settings.progress and is_terminal(sys.stderr) else None
    started = time.perf_counter()
    for made, index in enumerate(indices, 1):
        if c.stop() is not None:
            first = 0 if later or index != plan.done else plan.started
            clip_ended(c, Outcome("interrupted", first, None), index, pass_no)
            return False
        frame = c.frame(index)
        previous = previous_results(c, index, frame.content_rgb, results,
                                    passes.direction(pass_no))
        image = _make_frame(c, index, frame, previous, pass_no, folder)
        if image is None:
            return False
        results[index] = image
        forget_far(results, index, video)
        if bar is not None:
            bar.update(1)
        log.info("%s: frame %d/%d: %d iterations; %s", what, index + 1, plan.count,
                 c.job.summary["frames"][-1]["iterations"],
                 time_left(time.perf_counter() - started, made, len(indices) - made))
    if bar is not None:
        bar.close()
    if later:
        passes.commit(p.out, pass_no, plan.count)
    c.job.summary["passes"].append({"pass": pass_no, "direction": "forward" if passes.direction(
        pass_no) > 0 else "backward", "seconds": time.perf_counter() - started})
    return True


class _Frame:
    """One frame as the loop walks it (nst_tf.loop.Run): from `start`, or (None) from init
    through the coarse scales; tied to `previous` at the clip's size; written into `folder`."""

    def __init__(self, c: ClipRun, index: int, pass_no: int, start: np.ndarray | None,
                 previous: list, folder: Path) -> None:
        self.c, self.index, self.pass_no, self.start = c, index, pass_no, start
        self.previous, self.folder = previous, folder
        self.seed = c.p.settings.seed
        self.coarse: list[dict[str, float]] = []

    def at(self, size: int) -> Scaled:
        final = size == self.c.p.course.stages[-1].size
        return self.c.frame(self.index, None if final else size)

    def first_image(self, scaled: Scaled) -> np.ndarray:
        # The run's init, its noise drawn from seed + index (frame 0 starts as a still would).
        if self.start is not None:
            return self.start
        settings = self.c.p.settings
        return initial_image(settings.init.value, scaled.content, scaled.stretched,
                             settings.seed + self.index, settings.model.backbone)

    def member(self, leg: Leg, scaled: Scaled, start: np.ndarray) -> Member:
        # The temporal targets are at the clip's size only: coarse scales read no earlier frame.
        previous = self.previous if leg.number == leg.count else ()
        return Member(scaled.content, list(zip(scaled.styles, self.c.p.pictures.blend,
                                               strict=True)), start, self.c.weights,
                      scaled.masks, previous)

    def callbacks(self, leg: Leg, scaled: Scaled, member: int, step: StyleTransfer,
                  reused: bool) -> list:
        c, p = self.c, self.c.p
        if leg.number < leg.count:
            return [ProgressBar(leg.iterations, description=f"frame {self.index + 1} at "
                                f"{leg.stage.size} px", position=1)] if p.settings.progress else []
        losses = LossLog(p.out / "losses.csv", step.value_names, () if c.logging else c.rows,
                         tag=c.tag(self.index, self.pass_no), new_file=not c.logging)
        c.logging = True

        def show(image: np.ndarray) -> np.ndarray:
            return p.show(image, scaled.content_rgb)

        callbacks: list = [losses, Snapshots(p.out / SNAPSHOT.format(self.index),
                                             p.settings.save_every, show)]
        if p.settings.progress:
            callbacks.append(ProgressBar(leg.iterations, description=f"frame {self.index + 1}",
                                         position=1))
        return callbacks

    def keep(self, leg: Leg, scaled: Scaled, image: np.ndarray, outcome: Outcome) -> None:
        if leg.number < leg.count:
            self.coarse.append({"size": leg.stage.size, "iterations": outcome.iteration,
                                "seconds": outcome.progress.seconds})
            return
        save_png(self.folder / frame_name(self.index), self.c.p.show(image, scaled.content_rgb))
        shutil.rmtree(self.c.p.out / SNAPSHOT.format(self.index), ignore_errors=True)


def _make_frame(c: ClipRun, index: int, frame: Scaled, previous: list, pass_no: int,
                folder: Path) -> np.ndarray | None:
    """Frame `index`'s course walked, tied to `previous`, and written into `folder`. Returns its
    result; None once the run has ended here."""
    plan, p = c.plan, c.p
    first = 0 if pass_no > 1 or index != plan.done else plan.started
    final = p.course.stages[-1]
    stage = Stage(final.size, plan.iterations_of(index, pass_no), final.tile)
    if pass_no > 1:
        start = passes.blended(image_from(p, p.out / "frames" / frame_name(index)), previous,
                               p.settings.video.blend)
    elif first:  # the snapshot it was stopped at, `first` iterations in
        start = image_from(p, p.out / SNAPSHOT.format(index) / f"iter_{first:05d}.png")
    elif previous and p.settings.video.start == FrameStart.warped:
        start = previous[0][0]
    else:
        start = None if plan.coarse else initial_image(
            p.settings.init.value, frame.content, frame.stretched, p.settings.seed + index,
            p.settings.model.backbone)
    stages = (stage,) if start is not None else (*plan.coarse, stage)
    one = _Frame(c, index, pass_no, start, previous, folder)
    if first >= stage.iterations:  # stopped while its last image was being saved: it is done
        outcome, image = Outcome("ok", first, None), start
        save_png(folder / frame_name(index), p.show(image, frame.content_rgb))
    else:
        video = p.settings.video
        walked = walk([one], Course(stages, first, each_from_zero=True), c.build, c.stop,
                      done=lambda run, leg: Converged.rule(video.tolerance, video.window)
                      if leg.number == leg.count else None, say_legs=False)
        outcome, leg, image = walked.outcomes[0], walked.legs[0], walked.images[0]
        if leg.number < leg.count and outcome.status in ("ok", "interrupted"):
            # stopped at a coarse scale: nothing of the frame is saved; resume= makes it again
            outcome = dataclasses.replace(outcome, status="interrupted", iteration=0)
    progress = outcome.progress
    c.job.summary["frames"].append({
        **c.tag(index, pass_no), "status": outcome.status, "iterations": outcome.iteration,
        "seconds": progress.seconds if progress else None,
        "final": dict(progress.values) if progress else None, **(
            {"coarse": one.coarse} if one.coarse else {})})
    if outcome.status != "ok" or c.stop() is not None:
        clip_ended(c, outcome, index, pass_no)
        return None
    return image


