"""A still run, for one job or a batch: config -> pictures -> checks -> weights -> compiled
step -> loop -> outputs. `prepare` checks a job and reads its pictures; `run_group` makes the
runs of jobs that can share a compiled step, has the loop (nst_tf.loop) walk their course as
one batch, and records how each ended. `nst_tf.pipeline` turns jobs into groups and whatever
happens into records."""

import dataclasses
import importlib.util
import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

from nst_tf.backbones import get_backbone
from nst_tf.cache import check_cache_dir, default_cache_dir
from nst_tf.callbacks import LossLog, ProgressBar, Snapshots, TensorBoardLog, TimeEstimate
from nst_tf.config import RunConfig, record
from nst_tf.course import Course, Leg, Stage
from nst_tf.ending import end, ended
from nst_tf.errors import StopRequest, UserError
from nst_tf.images import save_png, to_array
from nst_tf.jobs import Composed, Job, Prepared
from nst_tf.loop import Converged, upsampled, walk
from nst_tf.objective import loss_terms, loss_weights
from nst_tf.pictures import (
    Scaled,
    check_resume,
    initial_image,
    read_pictures,
    resume_image,
)
from nst_tf.rundir import SETTINGS, check_run_dir, write_settings
from nst_tf.session import SESSION, Session
from nst_tf.tiling import tileable
from nst_tf.transfer import Member, Outcome, Progress, StyleTransfer, Weights

log = logging.getLogger("nst_tf")


def prepare(job: Job, composed: Composed, session: Session = SESSION,
            content: Image.Image | None = None) -> Prepared:
    """Check everything a run can get wrong before anything is built, read its pictures and
    weights; raises UserError (or OSError) with the one line for the user. `content`: the
    picture to use instead of reading content.path (a video's first frame)."""
    where, summary = job.where, job.summary
    settings, checkpoint = composed.settings, composed.checkpoint
    if settings.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise UserError("tensorboard=true needs the tensorboard package; "
                        "pip install 'nst-tf[tensorboard]', or drop tensorboard=true")
    names = ["total", *(term.name for term in loss_terms(settings))]  # checks extra terms too
    if settings.objective not in names:
        raise UserError(f"objective={settings.objective} is not a loss of this run; use one of "
                        f"{', '.join(names)}")
    if where.out:
        check_run_dir(where.out, where.dir_key)
    cache_dir = Path(settings.paths.cache).expanduser() if settings.paths.cache else None
    cache_dir = cache_dir or default_cache_dir()
    check_cache_dir(cache_dir)
    images_dir = Path(settings.paths.images).expanduser() if settings.paths.images else None
    summary["cache"] = str(cache_dir)
    pictures = read_pictures(settings, images_dir, cache_dir,
                             content or composed.images.get("content"),
                             composed.images.get("style"))
    try:
        tilings = pictures.check(settings)
    except UserError as error:  # a resumed run's size is its settings.yaml's, edited by hand
        if checkpoint is None:
            raise
        raise UserError(f"resume: {checkpoint.run_dir / SETTINGS}: {error}") from None
    tiled = next((tiling for tiling in tilings if tiling.tile), None)
    untileable = [term.name for term in loss_terms(settings) if not tileable(term)]
    if tiled and untileable:
        name = untileable[0]
        drop = f"drop +terms.{name}" if name in settings.terms else "use style_loss=gram"
        raise UserError(f"the {name} loss term cannot be computed in tiles (it is not a sum over "
                        f"the image's positions), and this run is tiled ({tiled.why}); use a "
                        f"smaller size, or {drop}")
    course = Course.of(settings, checkpoint, [tiling.tile for tiling in tilings])
    if checkpoint:
        course.check_resumable(checkpoint.run_dir, _rule(settings) is not None)
        check_resume(checkpoint, pictures.plan(course.resumed_size)[0])
    vgg = session.weights(settings, cache_dir)
    log.info("weights: %s (sha256 %s)", vgg.source, vgg.digest[:12])
    settings, summary["precision"] = session.precision(settings, vgg, cache_dir)
    summary.update({
        "config": record(composed.settings),
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
                   for stage, tiling in zip(course.stages, tilings, strict=True)],
    })
    return Prepared(job, composed, settings, checkpoint, pictures, vgg, course)


def group_key(prepared: Prepared) -> tuple:
    """Jobs with equal keys can run as one batch: one compiled step, one course."""
    shapes = tuple(prepared.pictures.plan(stage.size)[0] for stage in prepared.course.stages)
    return (Session.step_key(prepared.settings, prepared.weights, len(prepared.pictures.masks)),
            shapes, prepared.course)


class _Still:
    """A still run as the loop walks it (nst_tf.loop.Run)."""

    def __init__(self, p: Prepared, step: RunConfig, logs: dict[int, LossLog], index: int
                 ) -> None:
        self.p, self.step, self.logs, self.index = p, step, logs, index
        self.seed = p.settings.seed

    def at(self, size: int) -> Scaled:
        return self.p.pictures.at_size(size, self.p.settings.color.value)

    def first_image(self, scaled: Scaled) -> np.ndarray:
        p = self.p
        if p.checkpoint:  # made at its stage's size, or the stage before's
            return upsampled(resume_image(p.checkpoint, p.settings), scaled.content.shape[:2])
        return initial_image(p.settings.init.value, scaled.content, scaled.stretched,
                             p.settings.seed, p.settings.model.backbone)

    def member(self, leg: Leg, scaled: Scaled, start: np.ndarray) -> Member:
        return Member(scaled.content, list(zip(scaled.styles, self.p.pictures.blend, strict=True)),
                      start, _weights_on(self.p.settings, self.step), scaled.masks)

    def callbacks(self, leg: Leg, scaled: Scaled, member: int, step: StyleTransfer,
                  reused: bool) -> list:
        shape = scaled.content.shape[:2]
        self.p.job.summary["stages"].append({
            "size": leg.stage.size, "content_size": [shape[1], shape[0]],
            "style_sizes": [list(s) for s in scaled.style_sizes],
            "compile_seconds": step.compile_seconds, "reused_compiled_step": reused,
            "batch": step.batch, "member": member,
            "tiles": len(step.tiled.tiles) if step.tiled else 1, "tile": leg.stage.tile,
        })
        return _callbacks(self.p, scaled, leg.iterations, self.logs, self.index,
                          step.value_names, member)

    def keep(self, leg: Leg, scaled: Scaled, image: np.ndarray, outcome: Outcome) -> None:
        self.p.job.summary["stages"][-1]["ended"] = ended(outcome)
        if self.p.course.coarse_to_fine and self.p.out:
            save_png(self.p.out / f"scale_{leg.stage.size:05d}.png",
                     self.p.show(image, scaled.content_rgb))


def run_group(group: Sequence[Prepared], stop: StopRequest, session: Session = SESSION
              ) -> None:
    """Optimise `group` (equal group_key) as one batch along its course; each job's summary
    says how it ended and holds its outputs. Raises what no single job caused (out of memory)
    with every job's record untouched, and Stopped for a stop before anything was saved."""
    step_settings = union_of_layers(group)
    lead, logs = group[0], {}

    def build(stage: Stage, shape: tuple[int, int], batch: int) -> tuple[StyleTransfer, bool]:
        transfer, reused = session.transfer(step_settings, lead.weights, shape,
                                            len(lead.pictures.masks), batch, stage.tile)
        if transfer.tiled:
            number = lead.course.stages.index(stage) + 1
            log.info("scale %d/%d: %d tiles of up to %d px (%s)", number,
                     len(lead.course.stages), len(transfer.tiled.tiles), stage.tile,
                     lead.job.summary["tiling"][number - 1]["why"])
        return transfer, reused

    if not lead.course.legs():  # finished before: only its last outputs are missing
        for p in group:
            _outputs_again(p)
        return
    runs = [_Still(p, step_settings, logs, i) for i, p in enumerate(group)]
    walked = walk(runs, lead.course, build, stop, done=lambda i, leg: _rule(group[i].settings))
    with stop.noted():  # the results are saved whole, and said truly
        for i, p in enumerate(group):
            outcome, leg = walked.outcomes[i], walked.legs[i]
            finished = outcome.status == "ok" and leg.number == leg.count
            if outcome.status == "ok" and not finished:  # stopped between two scales
                outcome = dataclasses.replace(outcome, status="interrupted")
            image = walked.images[i] if outcome.status != "diverged" else None
            shown = None if image is None else p.show(image, walked.scaled[i].content_rgb)
            end(p, shown, outcome, walked.signum)
            if finished:
                values = outcome.progress.values
                log.info("%d iterations in %.1f s (%s): total %.4g, content %.4g, style %.4g%s",
                         outcome.iteration, outcome.progress.seconds, ended(outcome),
                         values["total"],
                         values["content"], values["style"],
                         f"; wrote {p.out / 'result.png'}" if p.out else "")


def _rule(settings: RunConfig) -> Converged | None:
    """A still's stop rule on each of its legs (none: it runs every iteration)."""
    converge = settings.converge
    return Converged.rule(converge.tolerance, converge.window, converge.change)


def _outputs_again(p: Prepared) -> None:
    """A finished run whose last outputs could not be written (a full disk): they are written
    from its final snapshot and loss rows, without running an iteration more."""
    checkpoint = p.checkpoint
    last = checkpoint.last or {"iteration": checkpoint.iteration, "seconds": checkpoint.seconds}
    names = [key for key in last if key not in ("iteration", "seconds", "size")]
    p.job.claimed = True
    if p.out:  # a whole run dir, which resume= can continue in turn
        write_settings(p.out, p.composed.settings)
        save_png(p.out / "snapshots" / checkpoint.image.name, to_array(checkpoint.picture))
    p.job.losses = LossLog(p.out / "losses.csv" if p.out else None, names,
                           [*checkpoint.rows, *([checkpoint.last] if checkpoint.last else [])])
    progress = Progress(checkpoint.iteration, last["seconds"], {k: last[k] for k in names})
    end(p, to_array(checkpoint.picture), Outcome("ok", checkpoint.iteration, progress), None)
    log.info("%s finished at iteration %d; wrote its missing outputs", checkpoint.run_dir,
             checkpoint.iteration)


def union_of_layers(group: Sequence[Prepared]) -> RunConfig:
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
        if out:
            write_settings(out, p.composed.settings)
        logs[index] = p.job.losses = LossLog(out / "losses.csv" if out else None, value_names,
                                             p.checkpoint.rows if p.checkpoint else ())

    def show(image: np.ndarray) -> np.ndarray:
        return p.show(image, pictures.content_rgb)

    callbacks: list = [logs[index]]
    if out is None:  # in memory: no files, so no snapshots and no TensorBoard either
        return callbacks + ([ProgressBar(iterations, description=p.job.label,
                                         position=member)] if p.settings.progress else [])
    callbacks.append(Snapshots(out / "snapshots", p.settings.save_every, show))
    if p.settings.tensorboard:
        callbacks.append(TensorBoardLog(out / "tensorboard", p.settings.save_every, show))
    if p.settings.progress:
        callbacks.append(ProgressBar(iterations, description=p.job.label, position=member))
    if member == 0:
        callbacks.append(TimeEstimate(iterations, at_most=_rule(p.settings) is not None))
    return callbacks
