"""A run's course: the sizes it optimises at (coarse to fine), the iterations at each, the
tiles, and where a resumed run picks up. The loop (nst_tf.loop) walks it; drivers only make
it: a still's course is its stages, a clip's is one such course per frame."""

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nst_tf.config import RunConfig
from nst_tf.errors import UserError
from nst_tf.resume import Checkpoint


@dataclass(frozen=True)
class Stage:
    """`iterations` at `size` px on the content's long side, computed in tiles of `tile` px
    (None: the whole image at once)."""

    size: int
    iterations: int
    tile: int | None = None


@dataclass(frozen=True)
class Leg:
    """One stretch of the loop: `iterations` updates at `stage`'s size, counted on from update
    `first` after `seconds` of earlier wall time. `number` of `count`: its stage in the course."""

    stage: Stage
    iterations: int
    first: int
    seconds: float
    number: int
    count: int


@dataclass(frozen=True)
class Course:
    """The stages in order; updates are counted across them. A resumed run picks up after
    update `first` (`seconds` of wall time), in the stage that update falls in, or at the start
    of the next one when it ended a stage. A stage may end before its iterations once it has
    converged: `starts` are the updates the later stages the earlier run reached began at."""

    stages: tuple[Stage, ...]
    first: int = 0
    seconds: float = 0.0
    starts: tuple[int, ...] = ()
    # A clip's frame counts each stage from 0 (its coarse scales only warm up its start), and
    # a resumed frame picks up in its one stage.
    each_from_zero: bool = False
    # The update each stage ends at: where the next one began, or where its iterations run out.
    _ends: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        starts, ends = [0, *self.starts], []
        for number, stage in enumerate(self.stages):
            begin = starts[number] if number < len(starts) else ends[-1]
            ends.append(starts[number + 1] if number + 1 < len(starts) else
                        begin + stage.iterations)
        object.__setattr__(self, "_ends", tuple(ends))  # once: the course does not change

    @classmethod
    def of(cls, settings: RunConfig, checkpoint: Checkpoint | None = None,
           tiles: Sequence[int | None] = ()) -> "Course":
        """`tiles`: each stage's tile size, as the memory check chose (none: all whole)."""
        sizes = settings.scales or [settings.size]
        iterations = list(settings.scale_iterations or [settings.iterations] * len(sizes))
        tiles = list(tiles) or [None] * len(sizes)
        stages = tuple(map(Stage, sizes, iterations, tiles))
        if checkpoint is None:
            return cls(stages)
        rows = [*checkpoint.rows, *([checkpoint.last] if checkpoint.last else [])]
        return cls(stages, checkpoint.iteration, checkpoint.seconds, _starts(stages, rows))

    @property
    def coarse_to_fine(self) -> bool:
        return len(self.stages) > 1

    @property
    def total(self) -> int:
        return self._ends[-1]

    @property
    def begin(self) -> int:
        """The stage the walk starts in: the one update `first` falls in."""
        if self.each_from_zero:
            return 0
        return next((i for i, end in enumerate(self._ends) if self.first < end),
                    len(self.stages))

    def _start_of(self, stage: int) -> int:
        return self._ends[stage - 1] if stage else 0

    @property
    def resumed_size(self) -> int:
        """The size a resumed run's snapshot was made at: its stage's, or the stage before's
        when it ended that one."""
        before = self._start_of(self.begin)
        at = self.begin - 1 if self.first == before and self.begin else self.begin
        return self.stages[min(at, len(self.stages) - 1)].size

    def legs(self) -> list[Leg]:
        """The stretches left to walk, the first shortened by what a resumed run did."""
        legs, first, seconds = [], self.first, self.seconds
        done = self._start_of(self.begin)
        for number, stage in enumerate(self.stages[self.begin:], start=self.begin + 1):
            left = done + stage.iterations - first
            legs.append(Leg(stage, left, first, seconds, number, len(self.stages)))
            if self.each_from_zero:
                done, first, seconds = 0, 0, 0.0
            else:
                done, first = done + stage.iterations, first + left
        return legs

    def check_resumable(self, run_dir: Path, converging: bool) -> None:
        """Refuse a resumed course with nothing left to walk, unless the run it continues lost
        its last outputs (a full disk): then they are written again, and nothing is walked.
        A run that converged is done while its stop rule is on (`converging`)."""
        record = _record(run_dir / "summary.json")
        whole = (run_dir / "result.png").is_file() and record.get("status") == "ok"
        if whole and converging and str(record.get("ended")).startswith("converged"):
            raise UserError(f"resume: {run_dir} {record['ended']}, so it is done; its result is "
                            "in that dir (to run on, add converge.tolerance=0 converge.change=0)")
        if self.first >= self.total and whole:
            more = ("ask for more with iterations=N (N > "
                    f"{self.first})" if not self.coarse_to_fine else
                    "its result is in that dir (resume= continues only unfinished scales)")
            raise UserError(f"resume: {run_dir} already ran {self.first} iterations; {more}")


def _record(summary: Path) -> dict:
    """A run's record (summary.json); none readable: empty."""
    try:
        record = json.loads(summary.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _starts(stages: Sequence[Stage], rows: Sequence[dict[str, float]]) -> tuple[int, ...]:
    """The update each stage after the first began at, of those the loss rows reach (each row
    says the size it was made at)."""
    starts, number = [], 0
    for row in rows:
        while number + 1 < len(stages) and row.get("size") == stages[number + 1].size:
            number += 1
            starts.append(int(row["iteration"]))
    return tuple(starts)
