"""The pipeline every entry uses (the Hydra app, the batching launcher, the Python API): jobs in,
a record of how each ended out. Jobs that can share a compiled step run as one batch; whatever
happens (a user's mistake, a stop signal, a divergence, a full disk) becomes each job's
`status`, `reason` and `exit_code` in its summary.json."""

import dataclasses
import logging
import shutil
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from nst_tf.config import ImageConfig, RunConfig
from nst_tf.ending import failure_message, stopped
from nst_tf.errors import Stopped, StopRequest, UserError, say
from nst_tf.images import IMAGE_SUFFIXES, images_in
from nst_tf.jobs import Composed, Job, Prepared, Where
from nst_tf.memory import largest_batch
from nst_tf.optimizer_config import LineSearch
from nst_tf.report import write_summary
from nst_tf.rundir import check_run_dir, claim_dir, release
from nst_tf.runner import group_key, prepare, run_group, union_of_layers
from nst_tf.session import SESSION
from nst_tf.video import run_video

log = logging.getLogger("nst_tf")

__all__ = ["Where", "attempt_jobs", "write_record"]

_ONE_AT_A_TIME = threading.RLock()  # the session's compiled step serves one batch at a time
AUTO_BATCH_CAP = 16  # batch_size=auto: at most this many, as the memory check and probe allow
OUT_OF_MEMORY = ("ran out of memory; use a smaller size, a smaller optimizer.history_size, "
                 "fewer runs per batch, or scales=[...]")


def attempt_jobs(jobs: Sequence[Job], batch_size: int | str = 1, keep_going: bool = False,
                 stop: StopRequest | None = None) -> list[dict[str, Any]]:
    """Run `jobs`, as batches of up to `batch_size` (or "auto": as many as a probe found
    fastest here and fit in memory, at most AUTO_BATCH_CAP) where they can share a compiled
    step, and return each one's summary, also written as its summary.json. A job whose
    content.path is a folder or glob runs once per image, one after another. A job's own
    mistake fails it alone. A stop signal before the loop stops at once; in the loop every
    running job saves; jobs after it are skipped. With `keep_going` (a sweep), a bug in one
    batch fails its jobs and the rest go on. `stop`: the request a driver's signal handlers
    feed (none: nothing stops the jobs but an error)."""
    stop = stop or StopRequest()
    claims: list[Path | None] = []
    with _ONE_AT_A_TIME, _releasing(claims):
        ready: list[Prepared] = []
        for job in jobs:
            if stop() is not None:
                _skip(job, stop())
                continue
            try:
                if job.where.out and not job.where.keep_failures:  # a sweep's job dirs: claimed
                    check_run_dir(job.where.out, job.where.dir_key)  # a refused dir keeps
                    claims.append(claim_dir(job.where.out, job.where.dir_key))  # every byte
                composed = job.compose()
                if composed.settings.video.enabled:  # frame after frame, alone
                    run_video(job, composed, stop)
                    continue
                inputs = content_inputs(composed.settings)
                if inputs is not None:  # a folder: one run per image, here
                    job.summary = _attempt_each(job, composed, inputs, stop)
                    continue
                ready.append(prepare(job, composed))
            except Stopped as stopped_here:
                stopped(job, stopped_here.signum, None)
                stop.request(stopped_here.signum)
            except Exception as error:  # noqa: BLE001  (worded by _fail; bugs re-raised there)
                _fail([job], error, keep_going)
        groups: list[list[Prepared]] = []
        with _ending(ready, keep_going, stop):
            groups = _groups(ready, batch_size)  # batch_size=auto may probe the step here
        for group in groups:
            if stop() is not None:
                for p in group:
                    _skip(p.job, stop())
                continue
            with _ending(group, keep_going, stop):
                run_group(group, stop)
    for job in jobs:
        _write(job)
    return [job.summary for job in jobs]


@contextmanager
def _releasing(claims: list[Path | None]) -> Iterator[None]:
    try:
        yield
    finally:
        for claim in claims:
            release(claim)


@contextmanager
def _ending(group: Sequence[Prepared], keep_going: bool, stop: StopRequest) -> Iterator[None]:
    """What ends the jobs of `group` that have not ended yet, before their loop saved anything:
    a stop signal, or an error (worded by _fail; bugs re-raised there unless `keep_going`)."""
    try:
        yield
    except Stopped as stopped_here:
        for p in group:
            if "exit_code" not in p.job.summary:
                stopped(p.job, stopped_here.signum, None)
        stop.request(stopped_here.signum)
    except Exception as error:  # noqa: BLE001
        _fail([p.job for p in group if "exit_code" not in p.job.summary], error, keep_going)


def _groups(ready: Sequence[Prepared], batch_size: int | str) -> list[list[Prepared]]:
    """Jobs that can share a compiled step, in the order they came, in batches of at most
    `batch_size`."""
    by_key: dict[tuple, list[Prepared]] = {}
    for p in ready:
        by_key.setdefault(group_key(p), []).append(p)
    groups = []
    for members in by_key.values():
        # As few batches as the size allows, of equal sizes where they can be: batches of one
        # size share one compiled step (20 jobs at most 16 at once: 10 + 10, one compile).
        count = -(-len(members) // _batch_size(members, batch_size))
        bounds = [round(i * len(members) / count) for i in range(count + 1)]
        groups += [members[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    return groups


def _batch_size(members: Sequence[Prepared], batch_size: int | str) -> int:
    """How many of these jobs run at once: 1 with a line search; `batch_size`, or ("auto") the
    most images per second the probe found here (nst_tf.batching), never more than the memory
    check says fit."""
    lead, jobs = members[0], len(members)
    settings = lead.settings
    if getattr(settings.optimizer, "line_search", None) == LineSearch.strong_wolfe:
        if jobs > 1 and batch_size != 1:
            say("optimizer.line_search=strong_wolfe runs one image at a time (each image's "
                "trial steps differ); these jobs run one after another")
        return 1
    wanted = min(AUTO_BATCH_CAP if batch_size == "auto" else int(batch_size), jobs)
    largest = max(lead.course.stages, key=lambda stage: stage.size).size
    content, styles = lead.pictures.plan(largest)
    # One more than asked: auto's probe holds one image's step beside a batch's.
    room = largest_batch(content[0] * content[1], max(w * h for w, h in styles),
                         lead.pictures.parts(settings, largest), wanted + 1)
    if batch_size != "auto":
        fits = min(room, wanted)
        if fits < wanted:
            say(f"batch_size={batch_size}: only {fits} runs at {largest} px fit in memory at "
                f"once; running {fits} at a time")
        return fits
    if room - 1 < 2 or any(stage.tile for stage in lead.course.stages):
        return 1  # nothing to share, or tiles: one image already fills the memory
    pixels = content[0] * content[1]
    steps = jobs * sum(leg.iterations * _pixels(lead, leg.stage.size) / pixels
                       for leg in lead.course.legs())
    return SESSION.batch_size(union_of_layers(members), lead.weights, (content[1], content[0]),
                              room - 1, steps, Path(lead.job.summary["cache"])).batch


def _pixels(p: Prepared, size: int) -> int:
    width, height = p.pictures.plan(size)[0]
    return width * height


def _fail(jobs: Sequence[Job], error: Exception, keep_going: bool) -> None:
    if isinstance(error, MemoryError | tf.errors.ResourceExhaustedError):
        for job in jobs:
            _record(job, exit_code=2, reason=OUT_OF_MEMORY)
        return
    if isinstance(error, UserError | OSError):
        for job in jobs:
            _record(job, exit_code=2,
                    reason=failure_message(error, job.where, job.summary.get("cache")))
        return
    if not keep_going:
        raise error
    log.error("%s failed", ", ".join(str(job.where.out) for job in jobs), exc_info=error)
    for job in jobs:
        _record(job, exit_code=1, reason=f"{type(error).__name__}: {error}".splitlines()[0])


def _skip(job: Job, signum: int) -> None:
    _record(job, status="skipped", exit_code=128 + signum, reason="not run: the sweep was stopped")


def _record(job: Job, **fields: Any) -> dict[str, Any]:
    job.summary.update({"status": "failed", **fields})
    return job.summary


def _write(job: Job) -> None:
    """summary.json: every ok run's; a failed one's if it had claimed its dir or the caller
    keeps failures (a sweep's table reads them). A dir it was refused stays untouched."""
    out, summary = job.where.out, job.summary
    if out is None:  # in memory: the caller has the record
        return
    if summary["status"] == "ok":
        try:
            write_summary(out / "summary.json", summary)
            return
        except UserError as error:
            _record(job, exit_code=2, reason=failure_message(error, job.where,
                                                             summary.get("cache")))
    if job.where.keep_failures or job.claimed:
        write_record(out, summary)


def content_inputs(settings: RunConfig) -> list[Path] | None:
    """The images a folder or glob in content.path names, sorted; None for one image."""
    spec = settings.content.path
    if not spec or not (Path(spec).expanduser().is_dir() or any(c in spec for c in "*?[")):
        return None
    images = sorted(images_in(Path(spec).expanduser()))
    if not images:
        raise UserError(f"content.path={spec} names no images ({', '.join(IMAGE_SUFFIXES)}); "
                        "give a folder or glob that has some, or one image")
    return images


def _attempt_each(job: Job, composed: Composed, inputs: list[Path], stop: StopRequest
                  ) -> dict[str, Any]:
    """One run per input, each in its own dir `OUT/NAME/`, its result also as `OUT/NAME.png`;
    images of one shape share the compiled step. A stop signal ends the whole batch."""
    where, overrides = job.where, job.overrides
    if where.out is None:
        raise UserError(f"content.path={composed.settings.content.path} is a folder of images: "
                        "give an output_dir to write their results into")
    check_run_dir(where.out, where.dir_key)
    stems = [p.stem for p in inputs]
    names = [p.stem if stems.count(p.stem) == 1 else p.name for p in inputs]
    summary: dict[str, Any] = {"overrides": list(overrides), "inputs": []}
    for path, name in zip(inputs, names, strict=True):
        one = dataclasses.replace(composed, settings=dataclasses.replace(
            composed.settings, content=ImageConfig(path=str(path))))
        (where.out / name).mkdir(parents=True, exist_ok=True)
        [done] = attempt_jobs([Job(lambda one=one: one, dataclasses.replace(
            where, out=where.out / name), list(overrides))], stop=stop)
        summary["inputs"].append({"path": str(path), "dir": name, "status": done["status"],
                                  "reason": done["reason"], "final": done.get("final")})
        if done["status"] == "ok":
            shutil.copyfile(where.out / name / "result.png", where.out / f"{name}.png")
        if done["status"] == "interrupted":
            summary.update(status="interrupted", exit_code=done["exit_code"],
                           reason=f"{name}: {done['reason']}")
            break
    else:
        finals = [entry["final"] for entry in summary["inputs"] if entry["final"]]
        if finals:  # what a sweeper reads of a batch: its mean losses
            summary["final"] = {key: float(np.mean([f[key] for f in finals])) for key in finals[0]}
        bad = [entry for entry in summary["inputs"] if entry["status"] != "ok"]
        summary.update(status="failed" if bad else "ok", exit_code=2 if bad else 0, reason=(
            f"{len(bad)} of {len(inputs)} images failed, e.g. {bad[0]['dir']}: "
            f"{bad[0]['reason']}" if bad else None))
    write_record(where.out, summary)
    return summary


def write_record(out: Path, summary: dict[str, Any]) -> None:
    """Best effort: the summary of a run that did not finish, for the sweep's table and figure."""
    try:
        write_summary(out / "summary.json", summary)
    except UserError:
        pass  # the run's failure is reported; a full disk must not hide it
