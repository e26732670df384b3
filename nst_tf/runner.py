"""The run itself, for one job or a batch: config -> pictures -> checks -> weights -> compiled
step -> loop -> outputs. `prepare` checks a job and reads its pictures; `run_group` optimises
jobs that can share a compiled step as one batch, walking their schedule, and records how each
ended. `nst_tf.pipeline` turns jobs into groups and whatever happens into records."""

import dataclasses
import importlib.util
import logging
import signal
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from omegaconf import DictConfig, OmegaConf
from PIL import Image

from nst_tf import color
from nst_tf.backbones import get_backbone
from nst_tf.cache import check_cache_dir, default_cache_dir
from nst_tf.callbacks import LossLog, ProgressBar, Snapshots, TensorBoardLog, TimeEstimate
from nst_tf.config import RunConfig, validate
from nst_tf.errors import UserError, WriteError, pause_point, stop_signals_noted
from nst_tf.images import save_png
from nst_tf.objective import loss_terms, loss_weights
from nst_tf.pictures import (
    Pictures,
    Scaled,
    check_resume,
    initial_image,
    read_pictures,
    resume_image,
)
from nst_tf.report import plot_losses, read_losses
from nst_tf.resume import Checkpoint, load_checkpoint, resumed_config
from nst_tf.rundir import check_run_dir, resume_override, write_settings
from nst_tf.schedule import Schedule
from nst_tf.session import SESSION, Session
from nst_tf.tiling import tileable
from nst_tf.transfer import Member, Outcome, Progress, Weights, optimise_batch
from nst_tf.weights import VGGWeights

log = logging.getLogger("nst_tf")


@dataclass(frozen=True)
class Where:
    """Where a run writes, and how its user changes that: the setting that chooses the run dir
    (e.g. hydra.run.dir) and the command that continues a stopped run."""

    out: Path
    dir_key: str
    command: str
    keep_failures: bool = False  # record a failed run's summary even if it never started


@dataclass
class Job:
    """One run asked for: its composed config, where it writes, the overrides that made it, and
    its record (summary.json), filled as it goes."""

    cfg: DictConfig
    where: Where
    overrides: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    claimed: bool = False  # it has written into its dir: its record goes there too

    def __post_init__(self) -> None:
        self.summary = {"status": "failed", "overrides": list(self.overrides), **self.summary}

    @property
    def label(self) -> str:
        """What the run is, for its progress bar: a sweep job's overrides, else its pictures."""
        if self.where.keep_failures and self.overrides:
            return " ".join(self.overrides)
        config = self.summary.get("config", {})
        names = [Path(self.summary.get("content", {}).get("path", "")).stem,
                 *(Path(s["path"]).stem for s in self.summary.get("styles", []))]
        return f"{' + '.join(filter(None, names))} {config.get('size', '')}px".strip()


@dataclass
class Prepared:
    """A job checked and read, ready to join a batch."""

    job: Job
    cfg: DictConfig  # as composed, or a resumed run's own
    settings: RunConfig  # precision=auto resolved
    checkpoint: Checkpoint | None
    pictures: Pictures
    weights: VGGWeights
    schedule: Schedule

    @property
    def out(self) -> Path:
        return self.job.where.out

    def show(self, image: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
        """The optimised image as the user sees it (colour modes recolour it)."""
        return color.present(self.settings.color.value, image, content_rgb)


def prepare(job: Job, session: Session = SESSION, content: Image.Image | None = None
            ) -> Prepared:
    """Check everything a run can get wrong before anything is built, read its pictures and
    weights; raises UserError (or OSError) with the one line for the user. `content`: the
    picture to use instead of reading content.path (a video's first frame)."""
    cfg, where, summary = job.cfg, job.where, job.summary
    checkpoint = load_checkpoint(cfg.resume) if cfg.resume else None
    if checkpoint:
        cfg = resumed_config(cfg, checkpoint.run_dir, job.overrides)
    settings = validate(cfg)
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("tensorboard=true needs the tensorboard package; "
                        "pip install 'nst-tf[tensorboard]', or drop tensorboard=true")
    names = ["total", *(term.name for term in loss_terms(settings))]  # checks extra terms too
    if settings.objective not in names:
        raise UserError(f"objective={settings.objective} is not a loss of this run; use one of "
                        f"{', '.join(names)}")
    check_run_dir(where.out, where.dir_key)
    cache_dir = Path(settings.paths.cache).expanduser() if settings.paths.cache else None
    cache_dir = cache_dir or default_cache_dir()
    check_cache_dir(cache_dir)
    images_dir = Path(settings.paths.images).expanduser() if settings.paths.images else None
    summary["cache"] = str(cache_dir)
    pictures = read_pictures(settings, images_dir, cache_dir, content)
    tilings = pictures.check(settings)
    tiled = next((tiling for tiling in tilings if tiling.tile), None)
    untileable = [term.name for term in loss_terms(settings) if not tileable(term)]
    if tiled and untileable:
        raise UserError(f"the {untileable[0]} loss term cannot be computed in tiles (it reads "
                        f"features but states no statistics), and this run is tiled "
                        f"({tiled.why}); use a smaller size, or drop +terms.{untileable[0]}")
    schedule = Schedule.of(settings, checkpoint, [tiling.tile for tiling in tilings])
    if checkpoint:
        check_resume(checkpoint, settings, pictures.plan(schedule.stages[0].size)[0])
    vgg = session.weights(settings, cache_dir)
    log.info("weights: %s (sha256 %s)", vgg.source, vgg.digest[:12])
    settings, summary["precision"] = session.precision(settings, vgg, cache_dir)
    summary.update({
        "config": OmegaConf.to_container(cfg, resolve=True, enum_to_str=True),
        "weights": {"source": vgg.source, "digest": vgg.digest},
        "content": {"path": str(pictures.content_path), "size": list(pictures.content.size)},
        "styles": [
            {"path": str(path), "weight": weight, "scale": scale}
            for path, weight, scale in zip(
                pictures.style_paths, pictures.blend, pictures.scales, strict=True
            )
        ],
        "loss_weights": asdict(loss_weights(settings)),
        "tensorflow": tf.__version__,
        "resumed_from": str(checkpoint.image) if checkpoint else None,
        "stages": [],
        "tiling": [{"size": stage.size, "tile": tiling.tile, "why": tiling.why,
                    "estimate_gib": round(tiling.estimate / 2**30, 2)}
                   for stage, tiling in zip(schedule.stages, tilings, strict=True)],
    })
    return Prepared(job, cfg, settings, checkpoint, pictures, vgg, schedule)


def group_key(prepared: Prepared) -> tuple:
    """Jobs with equal keys can run as one batch: one compiled step, one schedule."""
    shapes = tuple(prepared.pictures.plan(stage.size)[0] for stage in prepared.schedule.stages)
    return (Session.step_key(prepared.settings, prepared.weights, len(prepared.pictures.masks)),
            shapes, prepared.schedule.stages, prepared.schedule.first)


def run_group(group: Sequence[Prepared], session: Session = SESSION) -> int | None:
    """Optimise `group` (equal group_key) as one batch, stage by stage; each job's summary says
    how it ended and holds its outputs. Returns the stop signal that ended it early, if any.
    Raises what no single job caused (out of memory) with every job's record untouched."""
    schedule = group[0].schedule
    step_settings = _union_of_layers(group)
    running = list(range(len(group)))  # who is still going, by position in `group`
    images: list[np.ndarray | None] = [None] * len(group)
    first, seconds = schedule.first, schedule.seconds
    logs: dict[int, LossLog] = {}
    late: list[int] = []  # stop signals while saving
    for number, stage in enumerate(schedule.stages, start=1):
        scaled = {i: group[i].pictures.at_size(stage.size, group[i].settings.color.value)
                  for i in running}
        shape = scaled[running[0]].content.shape[:2]
        members = [Member(scaled[i].content,
                          list(zip(scaled[i].styles, group[i].pictures.blend, strict=True)),
                          _first_image(group[i], scaled[i], images[i], shape),
                          _weights_on(group[i].settings, step_settings), scaled[i].masks)
                   for i in running]
        log.info("scale %d/%d: content %dx%d; styles %s%s", number, len(schedule.stages),
                 shape[1], shape[0],
                 ", ".join(f"{w}x{h}" for w, h in scaled[running[0]].style_sizes),
                 f"; {len(running)} runs in one batch" if len(running) > 1 else "")
        lead = group[running[0]]
        transfer, reused = session.transfer(step_settings, lead.weights, shape,
                                            len(lead.pictures.masks), len(running), stage.tile)
        if transfer.tiled:
            log.info("scale %d/%d: %d tiles of up to %d px (%s)", number, len(schedule.stages),
                     len(transfer.tiled.tiles), stage.tile,
                     lead.job.summary["tiling"][number - 1]["why"])
        transfer.start_batch(members)
        callbacks = []
        for member, i in enumerate(running):
            group[i].job.summary["stages"].append({
                "size": stage.size, "content_size": [shape[1], shape[0]],
                "style_sizes": [list(s) for s in scaled[i].style_sizes],
                "compile_seconds": transfer.compile_seconds, "reused_compiled_step": reused,
                "batch": len(running), "member": member,
                "tiles": len(transfer.tiled.tiles) if transfer.tiled else 1, "tile": stage.tile,
            })
            callbacks.append(_callbacks(group[i], scaled[i], stage.iterations, logs, i,
                                        transfer.value_names, member))
        outcomes, signum = optimise_batch(transfer, stage.iterations, callbacks, first, seconds)
        ended: dict[int, Outcome] = {}
        with stop_signals_noted(late):  # what is being saved is saved whole, and said truly
            pause_point("save", lambda: bool(late))
            for member, (i, outcome) in enumerate(zip(running, outcomes, strict=True)):
                p, shown = group[i], group[i].show(transfer.result(member), scaled[i].content_rgb)
                if outcome.status != "ok":
                    _end(p, None if outcome.status == "diverged" else shown, outcome, signum)
                    continue
                images[i], ended[i] = transfer.result(member), outcome
                if schedule.coarse_to_fine:
                    save_png(p.out / f"scale_{stage.size:05d}.png", shown)
        running = list(ended)
        if signum is not None or not running:
            return signum or (late[0] if late else None)
        last = ended[running[0]]
        first, seconds = last.iteration, last.progress.seconds
    with stop_signals_noted(late):
        for i in running:
            p, outcome = group[i], ended[i]
            _end(p, p.show(images[i], scaled[i].content_rgb), outcome, None)
            values = outcome.progress.values
            log.info("%d iterations in %.1f s: total %.4g, content %.4g, style %.4g; wrote %s",
                     outcome.iteration, outcome.progress.seconds, values["total"],
                     values["content"], values["style"], p.out / "result.png")
    return late[0] if late else None  # a stop during the last saves: the batches after wait


def _first_image(p: Prepared, pictures: Scaled, previous: np.ndarray | None,
                 shape: tuple[int, int]) -> np.ndarray:
    """Where a run's stage starts: the previous stage's result upsampled (coarse to fine), the
    resumed snapshot, or the run's `init`."""
    keras.utils.set_random_seed(p.settings.seed)
    if previous is not None:
        return upsampled(previous, shape)
    if p.checkpoint:
        return resume_image(p.checkpoint, p.settings)
    return initial_image(p.settings.init.value, pictures.content, pictures.stretched,
                         p.settings.seed, p.settings.model.backbone)


def upsampled(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A coarser stage's result at the next stage's (height, width)."""
    return tf.image.resize(image, shape, method="bicubic").numpy()


def _union_of_layers(group: Sequence[Prepared]) -> RunConfig:
    """The settings the batch's step is built with: the first run's, reading every layer any
    run of the batch reads, in the backbone's order."""
    lead = group[0].settings
    order = get_backbone(lead.model.backbone).layers

    def union(key: str) -> list[str]:
        used = {name for p in group for name in getattr(p.settings, key)}
        return sorted(used, key=order.index)

    return dataclasses.replace(lead, content_layers=union("content_layers"),
                               style_layers=union("style_layers"))


def _weights_on(settings: RunConfig, step: RunConfig) -> Weights:
    """A run's weights on its batch's layers: 0 on those it does not read, so its objective
    and gradient are exactly its own."""
    weights = loss_weights(settings)
    layers = {"content": step.content_layers, "style": step.style_layers}
    return Weights(weights.terms, {
        term: {name: weights.layers.get(term, {}).get(name, 0.0) for name in names}
        for term, names in layers.items()})


def _callbacks(p: Prepared, pictures: Scaled, iterations: int, logs: dict[int, LossLog],
               index: int, value_names: Sequence[str], member: int) -> list:
    """A member's callbacks: the loss log (kept across stages), snapshots, TensorBoard, its
    progress bar, and for the batch's first member the time estimate."""
    out = p.out
    if index not in logs:  # everything is checked and built: the run now owns `out`
        p.job.claimed = True
        write_settings(out, p.cfg)
        logs[index] = LossLog(out / "losses.csv", value_names,
                              p.checkpoint.rows if p.checkpoint else ())

    def show(image: np.ndarray) -> np.ndarray:
        return p.show(image, pictures.content_rgb)

    callbacks: list = [logs[index], Snapshots(out / "snapshots", p.settings.save_every, show)]
    if p.settings.tensorboard:
        callbacks.append(TensorBoardLog(out / "tensorboard", p.settings.save_every, show))
    if p.settings.progress:
        callbacks.append(ProgressBar(iterations, description=p.job.label, position=member))
    if member == 0:
        callbacks.append(TimeEstimate(iterations))
    return callbacks


def _end(p: Prepared, image: np.ndarray | None, outcome: Outcome, signum: int | None) -> None:
    """A job's outputs and record for how it ended, the result first: it is what a full disk
    must not cost (the summary is written last, by the caller)."""
    out, summary = p.out, p.job.summary
    if image is not None and outcome.status != "failed":
        save_png(out / "result.png", image)
    if (out / "losses.csv").exists():
        plot_losses(read_losses(out / "losses.csv"), out / "loss_curve.png")
    progress = outcome.progress
    status = outcome.status
    summary.update(status=status, interrupted=status == "interrupted")
    if progress is not None:
        summary["iterations_done"] = progress.iteration
        summary["final"] = {"iteration": progress.iteration, "seconds": progress.seconds,
                            **progress.values}
    summary["compile_seconds"] = sum(s["compile_seconds"] for s in summary["stages"])
    summary["reused_compiled_step"] = all(s["reused_compiled_step"] for s in summary["stages"])
    if status == "ok":
        summary.update(reason=None, exit_code=0)
    elif status == "interrupted":
        stopped(p.job, signum or signal.SIGTERM, progress)
    elif status == "diverged":
        kept = (f"kept the last finite image as snapshots/iter_{progress.iteration:05d}.png, "
                "no result.png" if progress and progress.iteration else
                "no image was worth keeping")
        summary.update(exit_code=3, reason=(
            f"the loss became non-finite at iteration {outcome.iteration}; {kept}; lower "
            "optimizer.learning_rate or the loss weights"))
    else:  # a write failed: the image is what the user paid for, so still try to keep it
        reason = failure_message(outcome.error, p.job.where, summary.get("cache"))
        try:
            save_png(out / "result.png", image)
            reason += f"; the image so far is in {out / 'result.png'}"
        except UserError:
            pass
        summary.update(exit_code=2, reason=reason)


def stopped(job: Job, signum: int, progress: Progress | None) -> None:
    """Record a stop signal in `job`'s summary, with the command that continues it."""
    summary, where = job.summary, job.where
    name = signal.Signals(signum).name
    summary.update(status="interrupted", interrupted=True, exit_code=128 + signum)
    if progress is None:
        summary["reason"] = f"stopped by {name} before the first step; nothing was saved"
        return
    summary["reason"] = (f"stopped by {name} at iteration {progress.iteration}; saved the "
                         f"image, a snapshot and the losses in {where.out}")
    if not summary["config"]["scales"]:
        summary["reason"] += (f"; continue with: {where.command} {resume_override(where.out)} "
                              f"iterations={summary['config']['iterations']}")


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
    if path.is_relative_to(where.out):
        fix = f"{first} or choose another dir with {where.dir_key}=..."
    elif cache and path.is_relative_to(cache):
        fix = f"{first} or choose another cache dir with paths.cache=..."
    else:
        fix = "check that its folder exists, is writable and has space"
    return f"cannot write {path} ({reason}); {fix}"
