"""A run as the pipeline carries it: where it writes (`Where`), its settings as a driver made
them (`Composed`), the job asked for with its record (`Job`), and the job checked and read,
ready to run (`Prepared`)."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from nst_tf import color
from nst_tf.callbacks import LossLog
from nst_tf.config import RunConfig
from nst_tf.course import Course
from nst_tf.pictures import Pictures
from nst_tf.resume import Checkpoint
from nst_tf.weights import VGGWeights


@dataclass(frozen=True)
class Where:
    """Where a run writes, and how its user changes that: the setting that chooses the run dir
    (e.g. hydra.run.dir) and the command that continues a stopped run."""

    out: Path | None  # None: nothing is written, the results stay in memory (the API)
    dir_key: str
    command: str
    keep_failures: bool = False  # record a failed run's summary even if it never started


@dataclass(frozen=True)
class Composed:
    """A job's settings as the driver made them: typed and checked; with resume=, the earlier
    run's own, and its last snapshot (a video's: the run whose frames it takes over)."""

    settings: RunConfig
    checkpoint: Checkpoint | None = None
    earlier: Path | None = None
    images: Mapping[str, Image.Image] = field(default_factory=dict)  # given in memory, by role


@dataclass
class Job:
    """One run asked for: how its settings are made (by a driver, when the job runs, so that a
    mistake in them is this job's alone), where it writes, the overrides that made it, and its
    record (summary.json), filled as it goes."""

    compose: Callable[[], Composed]
    where: Where
    overrides: list[str]
    summary: dict[str, Any] = field(default_factory=dict)
    claimed: bool = False  # it has written into its dir: its record goes there too
    image: np.ndarray | None = None  # the result as shown, once there is one
    losses: LossLog | None = None  # its loss rows, in memory too

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
    composed: Composed
    settings: RunConfig  # precision=auto resolved
    checkpoint: Checkpoint | None
    pictures: Pictures
    weights: VGGWeights
    course: Course

    @property
    def out(self) -> Path | None:
        return self.job.where.out

    def show(self, image: np.ndarray, content_rgb: np.ndarray) -> np.ndarray:
        """The optimised image as the user sees it (colour modes recolour it)."""
        return color.present(self.settings.color.value, image, content_rgb)
