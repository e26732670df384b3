"""How a clip's run ended, in its record and outputs: `result.mp4` from every frame and the
per-frame plot once all are made; the line of a clip stopped, diverged or failed at a frame."""

import logging
import signal
from pathlib import Path
from typing import Any

import numpy as np

from nst_tf.clips import frame_name, write_video
from nst_tf.jobs import Job
from nst_tf.loop import stop_line
from nst_tf.report import plot_frames, read_losses
from nst_tf.rundir import resume_override
from nst_tf.transfer import Outcome

log = logging.getLogger("nst_tf")


def clip_ended(c: Any, outcome: Outcome, index: int, pass_no: int) -> None:
    """The record of a video that stopped or failed at frame `index` of pass `pass_no`."""
    out, summary, job = c.p.out, c.job.summary, c.job
    at = f"frame {index + 1}" + (f" of pass {pass_no}" if c.plan.passes > 1 else "")
    signum = c.stop()
    if signum is not None or outcome.status == "interrupted":
        signum = signum or signal.SIGTERM
        finished = index + 1 if outcome.status == "ok" else index  # it ended before the stop
        progress = " and the frame in progress" if outcome.status != "ok" and \
            outcome.iteration else ""
        kept = (f"saved {finished} finished frames{progress} in {out}" if pass_no == 1 else
                f"frames/ holds pass {pass_no - 1}, whole (resume= begins pass {pass_no} "
                f"again) in {out}")
        summary.update(status="interrupted", interrupted=True, exit_code=128 + signum,
                       reason=stop_line(signum, f"{at} (iteration {outcome.iteration})", kept,
                                        f"{job.where.command} {resume_override(out)}"))
    elif outcome.status == "diverged":
        summary.update(exit_code=3, reason=(
            f"the loss became non-finite at {at}, iteration {outcome.iteration}; "
            "lower the loss weights or video.temporal_weight"))
    else:
        summary.update(exit_code=2, reason=str(outcome.error))
    plot(out)


def clip_finished(job: Job, out: Path, count: int, fps: float) -> None:
    """result.mp4 from every frame, the per-frame plot, and the record."""
    write_video([out / "frames" / frame_name(i) for i in range(count)], out / "result.mp4", fps)
    if (out / "snapshots").is_dir() and not any((out / "snapshots").iterdir()):
        (out / "snapshots").rmdir()  # every frame finished: no frame in progress to keep
    plot(out)
    last = job.summary["video"]["passes"]
    finals = [f["final"] for f in job.summary["frames"] if f["final"] and f.get("pass", 1) == last]
    job.summary.update(status="ok", reason=None, exit_code=0, iterations_done=sum(
        f["iterations"] for f in job.summary["frames"]))
    if finals:  # what a sweeper reads: the mean over the frames made here in the last pass
        job.summary["final"] = {k: float(np.mean([f[k] for f in finals])) for k in finals[0]}
    log.info("%d frames at %.3g fps; wrote %s", count, fps, out / "result.mp4")


def plot(out: Path) -> None:
    if (out / "losses.csv").is_file():
        plot_frames(read_losses(out / "losses.csv"), out / "frame_losses.png")


def time_left(spent: float, made: int, left: int) -> str:
    each = spent / max(made, 1)
    return f"{each:.1f} s a frame, about {each * left / 60:.1f} min to go" if left else "done"
