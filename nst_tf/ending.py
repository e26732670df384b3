"""How a run ended, in its record and outputs: the result written first (what a full disk must
not cost), the first write that failed named with where the newest image is, the stop line
with the command that continues, a divergence said with the image kept."""

import signal
from collections.abc import Callable
from pathlib import Path

import numpy as np

from nst_tf.errors import UserError, WriteError
from nst_tf.images import save_png
from nst_tf.jobs import Job, Prepared, Where
from nst_tf.loop import stop_line
from nst_tf.report import plot_losses, read_losses
from nst_tf.resume import snapshots_in
from nst_tf.rundir import resume_override
from nst_tf.transfer import Outcome, Progress


def end(p: Prepared, image: np.ndarray | None, outcome: Outcome, signum: int | None) -> None:
    """A job's outputs and record for how it ended, the result first: it is what a full disk
    must not cost (the summary is written last, by the caller). A write that fails does not
    hide the first one that failed, and the record says where the newest image is."""
    out, summary = p.out, p.job.summary
    p.job.image = image
    failed = outcome.error if outcome.status == "failed" else None
    if out and image is not None and outcome.status != "diverged":
        failed = _written(lambda: save_png(out / "result.png", image), failed)
    if out and (out / "losses.csv").exists():
        failed = _written(lambda: plot_losses(read_losses(out / "losses.csv"),
                                              out / "loss_curve.png"), failed)
    progress, status = outcome.progress, outcome.status
    if failed is not None:
        status = "failed"
    summary.update(status=status, interrupted=status == "interrupted")
    if progress is not None:
        summary["iterations_done"] = progress.iteration
        summary["final"] = {"iteration": progress.iteration, "seconds": progress.seconds,
                            **progress.values}
    summary["compile_seconds"] = sum(s["compile_seconds"] for s in summary["stages"])
    summary["reused_compiled_step"] = all(s["reused_compiled_step"] for s in summary["stages"])
    if status == "ok":
        summary.update(reason=None, exit_code=0, ended=ended(outcome))
    elif status == "interrupted":
        stopped(p.job, signum or signal.SIGTERM, progress)
    elif status == "diverged":
        kept = (f"kept the last finite image as snapshots/iter_{progress.iteration:05d}.png, "
                "no result.png" if progress and progress.iteration else
                "no image was worth keeping")
        summary.update(exit_code=3, reason=(
            f"the loss became non-finite at iteration {outcome.iteration}; {kept}; lower "
            "optimizer.learning_rate or the loss weights"))
    else:
        summary.update(exit_code=2, reason=_failed_line(p, failed, outcome))


def ended(outcome: Outcome) -> str:
    """Why a leg (a run) that ended ok ended: its stop rule, or its iterations ran out."""
    return f"converged at iteration {outcome.iteration}" if outcome.converged else \
        "reached iterations"


def _written(write: Callable[[], None], failed: Exception | None) -> Exception | None:
    """Try `write`; the first failure is the one to name."""
    try:
        write()
    except (UserError, OSError) as error:
        return failed or error
    return failed


def _failed_line(p: Prepared, error: Exception, outcome: Outcome) -> str:
    """A failed write's line: what failed first, where the newest image is, how to go on."""
    line = failure_message(error, p.job.where, p.job.summary.get("cache"))
    out = p.out
    if out is None:
        return line
    if (out / "result.png").is_file() and outcome.status == "failed":
        return f"{line}; the image so far is in {out / 'result.png'}"
    if (out / "result.png").is_file():
        return f"{line}; the result is in {out / 'result.png'}"
    newest = newest_snapshot(out / "snapshots")
    if newest is None:
        return line
    finished = outcome.status == "ok" and newest.name == f"iter_{outcome.iteration:05d}.png"
    what = "the finished image" if finished else "the newest image saved"
    then = "writes what is missing without running more iterations" if finished else \
        "goes on from it"
    return (f"{line}; {what} is {newest}; once it can be written, "
            f"{p.job.where.command} {resume_override(out)} {then}")


def newest_snapshot(folder: Path) -> Path | None:
    """The snapshot of the most iterations in `folder`, if any."""
    found = snapshots_in(folder)
    return found[max(found)] if found else None


def stopped(job: Job, signum: int, progress: Progress | None) -> None:
    """Record a stop signal in `job`'s summary, with the command that continues it."""
    summary, where = job.summary, job.where
    summary.update(status="interrupted", interrupted=True, exit_code=128 + signum)
    if progress is None:
        summary["reason"] = (f"stopped by {signal.Signals(signum).name} before the first step; "
                             "nothing was saved")
        return
    config = summary["config"]
    more = "" if config["scales"] else f" iterations={config['iterations']}"
    if where.out is None:
        summary["reason"] = stop_line(signum, f"iteration {progress.iteration}",
                                      "the image so far is in the result", None)
        return
    summary["reason"] = stop_line(
        signum, f"iteration {progress.iteration}",
        f"saved the image, a snapshot and the losses in {where.out}",
        f"{where.command} {resume_override(where.out)}{more}")


def failure_message(error: Exception, where: Where, cache: str | None) -> str:
    """The one line for a user's mistake or a file that could not be written."""
    if isinstance(error, OSError) and error.filename is None:
        raise error  # not about a file: a bug, with its traceback
    if not isinstance(error, OSError | WriteError):
        return str(error)
    path = Path(error.path if isinstance(error, WriteError) else error.filename)
    reason = error.reason if isinstance(error, WriteError) else error.strerror
    cause = str(reason).lower()
    first = ("free some space" if "space" in cause or "quota" in cause or "too large" in cause
             else "make it writable" if any(word in cause for word in (
                 "permission", "read-only", "not permitted"))
             else "move the file in its way" if "not a directory" in cause or "exists" in cause
             else "check it")
    if where.out and path.is_relative_to(where.out):
        fix = f"{first} or choose another dir with {where.dir_key}=..."
    elif cache and path.is_relative_to(cache):
        fix = f"{first} or choose another cache dir with paths.cache=..."
    else:
        fix = "check that its folder exists, is writable and has space"
    return f"cannot write {path} ({reason}); {fix}"
