"""Resuming a video: the finished frames of a stopped run taken over by a new run dir, its loss
rows and record kept up to the stop, and the frame in progress continued from its snapshot."""

import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np

from nst_tf import color
from nst_tf import video_passes as passes
from nst_tf.clips import frame_name
from nst_tf.errors import UserError
from nst_tf.images import read_rgb, to_array
from nst_tf.jobs import Prepared
from nst_tf.objective import frames_back
from nst_tf.report import read_losses
from nst_tf.resume import snapshots_in
from nst_tf.video_passes import Frames

SNAPSHOT = "snapshots/frame_{:05d}"  # the frame in progress, as a still run's snapshots


def take_over(earlier: Path, out: Path, plan: Frames, p: Prepared
              ) -> tuple[Frames, dict[int, np.ndarray], list[dict[str, float]]]:
    """Link the earlier run's finished frames (of its last whole pass) into this run, take its
    loss rows and the frame in progress, and say where to go on. A pass it left unfinished
    after the first is begun again."""
    done = 0
    while (earlier / "frames" / frame_name(done)).is_file() and done < plan.count:
        done += 1
    whole = passes.passes_done(earlier) if done == plan.count else 0
    if whole >= plan.passes:
        raise UserError(f"resume: {earlier} already made all {plan.count} frames; nothing to "
                        "continue (its result.mp4 is the clip)")
    (out / "frames").mkdir(parents=True, exist_ok=True)
    results = {}
    for index in range(done):
        _link(passes.source(earlier, whole, index), out / "frames" / frame_name(index))
        if index >= done - max(frames_back(p.settings.video)):
            results[index] = image_from(p, out / "frames" / frame_name(index))
    snapshots = snapshots_in(earlier / SNAPSHOT.format(done))
    started = max(snapshots, default=0)
    if snapshots:
        target = out / SNAPSHOT.format(done)
        target.mkdir(parents=True)
        shutil.copyfile(snapshots[started], target / snapshots[started].name)

    def kept(pass_no: float, frame: float, iteration: float = -1) -> bool:
        # Whole passes, and in a first pass the frames before the stop and the stopped
        # frame's rows up to its snapshot (a record of it: never, it did not finish).
        return pass_no <= whole or pass_no == 1 and (
            frame < done or frame == done and 0 <= iteration < started)

    rows = []
    if (earlier / "losses.csv").is_file():
        table = read_losses(earlier / "losses.csv")
        keep = [i for i, frame in enumerate(table.get("frame", [])) if kept(
            table["pass"][i] if "pass" in table else 1, frame, table["iteration"][i])]
        rows = [{name: int(values[i]) if name in ("pass", "frame", "iteration") else values[i]
                 for name, values in table.items()} for i in keep]
    try:
        record = json.loads((earlier / "summary.json").read_text())
    except (OSError, ValueError):
        record = {}  # its summary lost: the frames and rows are what counts
    p.job.summary.update(resumed_from=str(earlier), frames=[
        f for f in record.get("frames", []) if f.get("status") == "ok" and
        kept(f.get("pass", 1), f.get("frame", done))], passes=[
        r for r in record.get("passes", []) if r.get("pass", 0) <= whole])
    plan = dataclasses.replace(plan, done=done, started=started, passes_done=whole)
    return plan, results, rows


def image_from(p: Prepared, path: Path) -> np.ndarray:
    """A written frame or snapshot back in the space the optimisation works in (colour modes
    optimise another image than the one shown)."""
    image, _ = color.prepare(p.settings.color.value, to_array(read_rgb(path)))
    return image


def _link(origin: Path, target: Path) -> None:
    """A hard link where the file system allows it (a frame is replaced, never rewritten in
    place), else a copy."""
    try:
        os.link(origin, target)
    except OSError:
        shutil.copyfile(origin, target)
