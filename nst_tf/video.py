"""Video: a clip stylised frame by frame with the temporal loss of Ruder, Dosovitskiy & Brox
(2016). Each frame is one run of the shared compiled step: its content is the frame, its
temporal targets the earlier results warped into it by optical flow where the flow is
reliable, and it starts from the previous result warped. Frames are written as they finish;
a stop saves the frame in progress, and resume= continues with it, never redoing a finished
one."""

import dataclasses
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from tqdm import tqdm

from nst_tf import color
from nst_tf.callbacks import LossLog, ProgressBar, Snapshots
from nst_tf.clips import Clip, frame_name, is_clip, open_clip, write_video
from nst_tf.config import FrameStart
from nst_tf.errors import UserError, pause_point, stop_signals_noted
from nst_tf.images import read_rgb, save_png, to_array
from nst_tf.objective import frames_back, loss_weights
from nst_tf.pictures import initial_image
from nst_tf.report import plot_frames, read_losses
from nst_tf.resume import resumed_config
from nst_tf.rundir import resume_override, write_settings
from nst_tf.runner import Job, Prepared, prepare
from nst_tf.session import SESSION, Session
from nst_tf.transfer import Member, Outcome, optimise_batch

log = logging.getLogger("nst_tf")

_SNAPSHOT = "snapshots/frame_{:05d}"  # the frame in progress, as a still run's snapshots


def is_video(cfg: DictConfig) -> bool:
    """A clip file as content.path, frames with video.enabled, or resume= of a video run."""
    if cfg.get("resume"):
        return (Path(cfg.resume).expanduser() / "frames").is_dir()
    path = OmegaConf.select(cfg, "content.path")
    return bool(OmegaConf.select(cfg, "video.enabled") or (path and is_clip(path)))


@dataclass(frozen=True)
class Frames:
    """The video's course: which frames to make, the iterations of each, and where a resumed
    run picks up (`done` frames finished; the next one `started` iterations in)."""

    count: int
    first_iterations: int
    iterations: int
    done: int = 0
    started: int = 0

    def iterations_of(self, index: int) -> int:
        return self.first_iterations if index == 0 else self.iterations

    def left(self, index: int) -> int:
        return self.iterations_of(index) - (self.started if index == self.done else 0)


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
        cfg = _resumed(cfg, earlier, job.overrides)
    if cfg.scales:
        raise UserError("a video runs at one size; drop scales=... and give size=...")
    cfg.video.enabled = True
    job.cfg = cfg
    with open_clip(cfg.content.path, cfg.video.fps) as clip:  # its reader ends with the run
        return _stylise(job, clip, earlier, session)


def _stylise(job: Job, clip: Clip, earlier: Path | None, session: Session) -> int | None:
    cfg = job.cfg
    p = prepare(job, session, content=Image.fromarray(clip.frame(0)))
    settings, out, video = p.settings, p.out, p.settings.video
    count = min(clip.info.frames, video.frames or clip.info.frames)
    first_iterations = video.iterations_first or settings.iterations
    plan = Frames(count, first_iterations, video.iterations or max(1, first_iterations // 2))
    results: dict[int, np.ndarray] = {}
    rows: list[dict[str, float]] = []
    if earlier:
        plan, results, rows = _take_over(earlier, out, plan, p)
    job.summary.setdefault("frames", [])
    job.summary["video"] = {"frames": count, "fps": clip.info.fps, "size": clip.info.size,
                            "first": plan.done}
    job.claimed = True
    write_settings(out, cfg)
    size = settings.size
    shape = p.pictures.at_size(size, settings.color.value).content.shape[:2]
    transfer, _ = session.transfer(settings, p.weights, shape, len(p.pictures.masks))
    value_names = transfer.value_names
    weights = loss_weights(settings)
    late: list[int] = []
    scaled_frames: dict[int, np.ndarray] = {}

    def scaled(index: int):
        picture = dataclasses.replace(p.pictures, content=Image.fromarray(clip.frame(index)))
        return picture.at_size(size, settings.color.value)

    bar = tqdm(total=count, initial=plan.done, desc="frames", unit="frame",
               dynamic_ncols=True) if settings.progress else None
    started = time.perf_counter()
    with stop_signals_noted(late):  # between frames too: the finished ones are saved
        for index in range(plan.done, count):
            frame = scaled(index)
            scaled_frames[index] = frame.content_rgb
            previous = _previous(index, frame.content_rgb, results, scaled, scaled_frames, video)
            member = Member(frame.content, list(zip(frame.styles, p.pictures.blend, strict=True)),
                            _start(p, plan, index, frame, previous, out), weights, frame.masks,
                            previous)
            if late:
                _ended(job, Outcome("interrupted", plan.started if index == plan.done else 0,
                                    None), late[0], index)
                return late[0]
            transfer.start_batch([member])
            callbacks = _callbacks(p, frame, index, plan, value_names, rows, bar is not None)
            outcome, signum = _optimise(transfer, plan, index, callbacks, video)
            pause_point("save", lambda: bool(late))
            image = transfer.result(0)
            if outcome.status == "ok":
                save_png(out / "frames" / frame_name(index), p.show(image, frame.content_rgb))
                shutil.rmtree(out / _SNAPSHOT.format(index), ignore_errors=True)
                results[index] = image
                _forget_before(results, index, video)
            job.summary["frames"].append(_frame_record(index, outcome))
            signum = signum or (late[0] if late else None)
            if outcome.status != "ok" or signum is not None:
                _ended(job, outcome, signum, index)
                return signum
            if bar is not None:
                bar.update(1)
            log.info("frame %d/%d: %d iterations; %s", index + 1, count, outcome.iteration,
                     _time_left(time.perf_counter() - started, index + 1 - plan.done,
                                count - index - 1))
        if bar is not None:
            bar.close()
        _finish(job, out, count, clip.info.fps)
    return late[0] if late else None


def _resumed(cfg: DictConfig, earlier: Path, overrides: Sequence[str]) -> DictConfig:
    resumed = resumed_config(cfg, earlier, overrides)
    resumed.resume = None  # this run starts fresh in its own dir, from the earlier frames
    return resumed


def _take_over(earlier: Path, out: Path, plan: Frames, p: Prepared
               ) -> tuple[Frames, dict[int, np.ndarray], list[dict[str, float]]]:
    """Link the earlier run's finished frames into this run, take its loss rows and the frame
    in progress, and say where to go on."""
    done = 0
    while (earlier / "frames" / frame_name(done)).is_file() and done < plan.count:
        done += 1
    if done == plan.count:
        raise UserError(f"resume: {earlier} already made all {plan.count} frames; nothing to "
                        "continue (its result.mp4 is the clip)")
    (out / "frames").mkdir(parents=True, exist_ok=True)
    results = {}
    for index in range(done):
        source = earlier / "frames" / frame_name(index)
        _link(source, out / "frames" / frame_name(index))
        if index >= done - max(frames_back(p.settings.video)):
            image, _ = color.prepare(p.settings.color.value, to_array(read_rgb(source)))
            results[index] = image
    snapshots = sorted((earlier / _SNAPSHOT.format(done)).glob("iter_*.png"))
    started = int(snapshots[-1].stem.split("_")[1]) if snapshots else 0
    if snapshots:
        target = out / _SNAPSHOT.format(done)
        target.mkdir(parents=True)
        shutil.copyfile(snapshots[-1], target / snapshots[-1].name)
    rows = []
    if (earlier / "losses.csv").is_file():
        table = read_losses(earlier / "losses.csv")
        keep = [i for i, frame in enumerate(table.get("frame", []))
                if frame < done or (frame == done and table["iteration"][i] < started)]
        rows = [{name: int(values[i]) if name in ("frame", "iteration") else values[i]
                 for name, values in table.items()} for i in keep]
    p.job.summary.update(resumed_from=str(earlier), frames=_earlier_frames(earlier, done))
    return dataclasses.replace(plan, done=done, started=started), results, rows


def _earlier_frames(earlier: Path, done: int) -> list[dict[str, Any]]:
    """The records of the frames an earlier run finished (none if its summary is lost)."""
    try:
        frames = json.loads((earlier / "summary.json").read_text()).get("frames", [])
    except (OSError, ValueError):
        return []
    return [f for f in frames if f.get("status") == "ok" and f.get("frame", done) < done]


def _previous(index: int, frame: np.ndarray, results: dict[int, np.ndarray], scaled,
              frames: dict[int, np.ndarray], video) -> list[tuple[np.ndarray, np.ndarray]]:
    """The earlier results warped into frame `index`, with their reliability weights."""
    from nst_tf.flow import long_term_weights, optical_flow, reliability, warp

    warped, reliable = [], []
    for back in frames_back(video):
        if index - back < 0 or index - back not in results:
            break
        before = frames.get(index - back)
        if before is None:
            before = frames[index - back] = scaled(index - back).content_rgb
        backward = optical_flow(frame, before, video.flow.value)
        forward = optical_flow(before, frame, video.flow.value)
        warped.append(warp(results[index - back], backward))
        reliable.append(reliability(backward, forward))
    _forget_before(frames, index, video)
    weights = long_term_weights(reliable) if video.long_term else reliable
    return list(zip(warped, weights, strict=True))


def _forget_before(kept: dict[int, np.ndarray], index: int, video) -> None:
    """Drop what frames after `index` no longer tie to (long-term reaches 4 back)."""
    for old in [k for k in kept if k < index - max(frames_back(video))]:
        del kept[old]


def _start(p: Prepared, plan: Frames, index: int, frame, previous, out: Path) -> np.ndarray:
    """A frame's first image: the snapshot it was stopped at, the previous result warped
    (Ruder et al.), or the run's init."""
    if index == plan.done and plan.started:
        snapshot = out / _SNAPSHOT.format(index) / f"iter_{plan.started:05d}.png"
        image, _ = color.prepare(p.settings.color.value, to_array(read_rgb(snapshot)))
        return image
    if previous and p.settings.video.start == FrameStart.warped:
        return previous[0][0]
    return initial_image(p.settings.init.value, frame.content, frame.stretched, p.settings.seed,
                         p.settings.model.backbone)


def _callbacks(p: Prepared, frame, index: int, plan: Frames, value_names: Sequence[str],
               earlier: Sequence[dict[str, float]], under_bar: bool) -> list:
    """A frame's loss rows (one losses.csv for the clip, begun by the run's first frame), the
    snapshots of the frame in progress, its progress bar."""
    out, new_file = p.out, index == plan.done
    losses = LossLog(out / "losses.csv", value_names, earlier if new_file else (),
                     tag={"frame": index}, new_file=new_file)

    def show(image: np.ndarray) -> np.ndarray:
        return p.show(image, frame.content_rgb)

    callbacks: list = [losses, Snapshots(out / _SNAPSHOT.format(index), p.settings.save_every,
                                       show)]
    if p.settings.progress:
        callbacks.append(ProgressBar(plan.left(index), description=f"frame {index + 1}",
                                     position=int(under_bar)))
    return callbacks


def _optimise(transfer, plan: Frames, index: int, callbacks, video) -> tuple[Outcome, int | None]:
    first = plan.started if index == plan.done else 0
    left = plan.left(index)
    if left <= 0:  # stopped while its last image was being saved: it is done
        return Outcome("ok", first, None), None
    outcomes, signum = optimise_batch(transfer, left, [callbacks], first,
                                      done=FlatLoss(video.tolerance, video.window))
    return outcomes[0], signum


def _frame_record(index: int, outcome: Outcome) -> dict[str, Any]:
    progress = outcome.progress
    return {"frame": index, "status": outcome.status, "iterations": outcome.iteration,
            "seconds": progress.seconds if progress else None,
            "final": dict(progress.values) if progress else None}


def _ended(job: Job, outcome: Outcome, signum: int | None, index: int) -> None:
    """The record of a video that stopped or failed at frame `index`."""
    out, summary = job.where.out, job.summary
    if signum is not None or outcome.status == "interrupted":
        signum = signum or signal.SIGTERM
        name = signal.Signals(signum).name
        summary.update(status="interrupted", interrupted=True, exit_code=128 + signum, reason=(
            f"stopped by {name} at frame {index + 1} (iteration {outcome.iteration}); "
            f"saved {index} finished frames and the frame in progress in {out}; continue "
            f"with: {job.where.command} {resume_override(out)}"))
    elif outcome.status == "diverged":
        summary.update(exit_code=3, reason=(
            f"the loss became non-finite at frame {index + 1}, iteration {outcome.iteration}; "
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
    finals = [f["final"] for f in job.summary["frames"] if f["final"]]
    job.summary.update(status="ok", reason=None, exit_code=0, iterations_done=sum(
        f["iterations"] for f in job.summary["frames"]))
    if finals:  # what a sweeper reads: the mean over the frames made here
        job.summary["final"] = {k: float(np.mean([f[k] for f in finals])) for k in finals[0]}
    log.info("%d frames at %.3g fps; wrote %s", count, fps, out / "result.mp4")


def _plot(out: Path) -> None:
    if (out / "losses.csv").is_file():
        plot_frames(read_losses(out / "losses.csv"), out / "frame_losses.png")


def _time_left(spent: float, made: int, left: int) -> str:
    each = spent / max(made, 1)
    return f"{each:.1f} s a frame, about {each * left / 60:.1f} min to go" if left else "done"


def _link(source: Path, target: Path) -> None:
    """A hard link where the file system allows it (frames are never rewritten), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
