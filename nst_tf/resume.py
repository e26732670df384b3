"""Continuing an earlier run (finished, interrupted or crashed) from its last whole snapshot."""

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from nst_tf.errors import UserError, warn
from nst_tf.images import read_rgb
from nst_tf.report import FIXED
from nst_tf.rundir import SETTINGS

_SNAPSHOT = re.compile(r"iter_(\d+)\.png")


@dataclass(frozen=True)
class Checkpoint:
    """The earlier run's last whole snapshot and its loss rows before it."""

    run_dir: Path
    image: Path
    picture: Image.Image
    iteration: int
    rows: list[dict[str, float]]  # before the snapshot
    last: dict[str, float] | None = None  # the snapshot's own row, if it was logged

    @property
    def seconds(self) -> float:
        return self.rows[-1]["seconds"] if self.rows else 0.0


def load_checkpoint(run_dir: str) -> Checkpoint:
    folder = Path(run_dir).expanduser()
    _check_run_dir(folder)
    snapshots = snapshots_in(folder / "snapshots")
    if not snapshots:
        raise UserError(
            f"resume: {folder} has no snapshot (snapshots/iter_NNNNN.png); give the run dir of "
            "a run with save_every > 0 or one stopped by Ctrl-C or SIGTERM"
        )
    iteration, picture = _last_whole(snapshots)
    rows = read_loss_rows(folder / "losses.csv")
    at = [row for row in rows if row["iteration"] == iteration]
    return Checkpoint(folder, snapshots[iteration], picture, iteration,
                      [row for row in rows if row["iteration"] < iteration],
                      at[-1] if at else None)


def snapshots_in(folder: Path) -> dict[int, Path]:
    """A run's snapshots `iter_NNNNN.png` in `folder`, by iteration (by number, not by name:
    past 99999 iterations the names no longer sort)."""
    return {int(match.group(1)): path for path in folder.glob("iter_*.png")
            if (match := _SNAPSHOT.fullmatch(path.name))}


def _check_run_dir(folder: Path) -> None:
    """Say what `folder` is when it is not a run dir to continue."""
    if not folder.exists():
        raise UserError(f"resume: {folder} does not exist; give the dir of the run to continue")
    if not folder.is_dir():
        raise UserError(f"resume: {folder} is a file, not a run dir; give the dir it is in")
    jobs = sorted((p for p in folder.iterdir() if (p / SETTINGS).is_file()),
                  key=lambda p: (len(p.name), p.name))
    if (folder / "multirun.yaml").is_file() or (jobs and not (folder / SETTINGS).exists()):
        example = jobs[0] if jobs else folder / "0"
        raise UserError(f"resume: {folder} is a sweep's dir; give one of its jobs, e.g. "
                        f"resume={example}")


def _last_whole(snapshots: dict[int, Path]) -> tuple[int, Image.Image]:
    """The newest snapshot that decodes; a damaged one (a crash mid-write) is passed over."""
    damaged = []
    for iteration in sorted(snapshots, reverse=True):
        try:
            picture = read_rgb(snapshots[iteration])
        except UserError:
            damaged.append(snapshots[iteration].name)
            continue
        if damaged:
            warn(f"resume: snapshot {', '.join(damaged)} is damaged; continuing from "
                 f"{snapshots[iteration].name}")
        return iteration, picture
    raise UserError(f"resume: every snapshot in {snapshots[max(snapshots)].parent} is damaged "
                    f"({', '.join(damaged)}); start a new run instead")


def read_loss_rows(path: Path) -> list[dict[str, float]]:
    """An earlier run's losses.csv (none: no rows); a damaged one is refused in one line."""
    if not path.exists():
        return []

    def damaged(where: str) -> UserError:
        return UserError(f"resume: {path} is damaged ({where}); repair it, or move it away to "
                         "resume without the earlier loss curve")

    try:
        with open(path, newline="") as file:
            reader = csv.DictReader(file)
            header = tuple(reader.fieldnames or ())
            if header[:3] != (*FIXED, "total") or header[-1:] != ("size",):
                raise damaged(f"its header is not {','.join(FIXED)},total,...,size")
            rows = []
            for row in reader:
                try:
                    values = {k: float(v) for k, v in row.items()}
                except (TypeError, ValueError):
                    raise damaged(f"line {reader.line_num} is not all numbers") from None
                if not all(map(math.isfinite, values.values())):
                    raise damaged(f"line {reader.line_num} is not all finite numbers")
                rows.append({k: int(v) if k == "iteration" else v for k, v in values.items()})
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise damaged(type(error).__name__) from error
    return rows
