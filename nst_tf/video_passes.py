"""A video's course (`Frames`), and Ruder et al.'s multi-pass algorithm (2016, section 4.4):
after the first, forward pass over the clip, passes alternate direction. In a later pass each
frame starts from its own result of the pass before blended with its neighbour's new result
(the neighbour in the pass's direction), warped, where the flow is reliable; the temporal loss
ties it to that neighbour.

A later pass writes its frames aside (`frames_pass_N/`); once all are made, `passes.json` says
so and they replace `frames/` one by one. So `frames/` always holds a whole pass, and a stop
mid-pass loses only that pass's frames: resume= begins it again."""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nst_tf.clips import frame_name
from nst_tf.course import Stage
from nst_tf.files import write_atomic

MARKER = "passes.json"  # {"done": N}: the passes finished (none: a single-pass run)


@dataclass(frozen=True)
class Frames:
    """The video's course: which frames to make, the iterations of each, the passes, the
    coarse scales a frame from init goes through (`scales=[...]` but the last), and where
    a resumed run picks up (`passes_done` whole passes; in the first, `done` frames finished
    and the next one `started` iterations in)."""

    count: int
    first_iterations: int
    iterations: int
    done: int = 0
    started: int = 0
    passes: int = 1
    pass_iterations: int = 0  # each frame's in a pass after the first
    passes_done: int = 0
    coarse: tuple[Stage, ...] = ()  # a frame starting from init goes through these first

    def iterations_of(self, index: int, pass_no: int = 1) -> int:
        if pass_no > 1:
            return self.pass_iterations
        return self.first_iterations if index == 0 else self.iterations


def direction(pass_no: int) -> int:
    """+1 for a forward pass (the 1st, 3rd, ...), -1 for a backward one."""
    return 1 if pass_no % 2 else -1


def order(pass_no: int, count: int, done: int = 0) -> range:
    """The frames of a pass in the order it makes them (`done`: frames the 1st pass already has)."""
    return range(done, count) if direction(pass_no) > 0 else range(count - 1, -1, -1)


def staging(out: Path, pass_no: int) -> Path:
    """Where a later pass writes its frames until the pass is whole."""
    return out / f"frames_pass_{pass_no}"


def blended(own: np.ndarray, previous: list[tuple[np.ndarray, np.ndarray]], delta: float
            ) -> np.ndarray:
    """A frame's start in a later pass: δ·c·ω + (1 − δ·c)·x, with x its own result of the pass
    before, ω its neighbour's new result warped into it and c that warp's reliability. The
    first frame in the pass's direction has no neighbour: its own result."""
    if not previous:
        return own
    warped, reliable = previous[0]
    share = np.float32(delta) * reliable[..., None]
    return share * warped + (1 - share) * own


def commit(out: Path, pass_no: int, count: int) -> None:
    """Make a whole later pass the clip's frames: record it, then move its frames in. Each move
    is atomic; a run killed between them is completed by resume= (see `source`)."""
    write_atomic(out / MARKER, (json.dumps({"done": pass_no}) + "\n").encode())
    folder = staging(out, pass_no)
    for index in range(count):
        os.replace(folder / frame_name(index), out / "frames" / frame_name(index))
    folder.rmdir()


def passes_done(run: Path) -> int:
    """How many passes an earlier run whose frames are all made finished."""
    try:
        return int(json.loads((run / MARKER).read_text())["done"])
    except (OSError, ValueError, KeyError, TypeError):
        return 1  # no record: a single-pass run, or one stopped before its 2nd pass ended


def source(run: Path, done: int, index: int) -> Path:
    """Frame `index` of an earlier run's last finished pass: still aside if it was killed while
    moving that pass's frames in, else in frames/."""
    aside = staging(run, done) / frame_name(index)
    return aside if done > 1 and aside.is_file() else run / "frames" / frame_name(index)
