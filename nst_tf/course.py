"""A run's course: the sizes it optimises at (coarse to fine), the iterations at each, the
tiles, and where a resumed run picks up. The loop (nst_tf.loop) walks it; drivers only make
it: a still's course is its stages, a clip's is one such course per frame."""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
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
    of the next one when it ended a stage."""

    stages: tuple[Stage, ...]
    first: int = 0
    seconds: float = 0.0
    # A clip's frame counts each stage from 0 (its coarse scales only warm up its start), and
    # a resumed frame picks up in its one stage.
    each_from_zero: bool = False

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
        return cls(stages, checkpoint.iteration, checkpoint.seconds)

    @property
    def coarse_to_fine(self) -> bool:
        return len(self.stages) > 1

    @property
    def total(self) -> int:
        return sum(stage.iterations for stage in self.stages)

    @property
    def begin(self) -> int:
        """The stage the walk starts in: the one update `first` falls in."""
        if self.each_from_zero:
            return 0
        ends = list(accumulate(stage.iterations for stage in self.stages))
        return next((i for i, end in enumerate(ends) if self.first < end), len(self.stages))

    @property
    def resumed_size(self) -> int:
        """The size a resumed run's snapshot was made at: its stage's, or the stage before's
        when it ended that one."""
        before = sum(stage.iterations for stage in self.stages[:self.begin])
        at = self.begin - 1 if self.first == before and self.begin else self.begin
        return self.stages[min(at, len(self.stages) - 1)].size

    def legs(self) -> list[Leg]:
        """The stretches left to walk, the first shortened by what a resumed run did."""
        legs, first, seconds = [], self.first, self.seconds
        done = sum(stage.iterations for stage in self.stages[:self.begin])
        for number, stage in enumerate(self.stages[self.begin:], start=self.begin + 1):
            left = done + stage.iterations - first
            legs.append(Leg(stage, left, first, seconds, number, len(self.stages)))
            if self.each_from_zero:
                done, first, seconds = 0, 0, 0.0
            else:
                done, first = done + stage.iterations, first + left
        return legs

    def check_resumable(self, run_dir: Path) -> None:
        """Refuse a resumed course with nothing left to walk, unless the run it continues lost
        its last outputs (a full disk): then they are written again, and nothing is walked."""
        whole = (run_dir / "result.png").is_file() and _ended_ok(run_dir / "summary.json")
        if self.first >= self.total and whole:
            more = ("ask for more with iterations=N (N > "
                    f"{self.first})" if not self.coarse_to_fine else
                    "its result is in that dir (resume= continues only unfinished scales)")
            raise UserError(f"resume: {run_dir} already ran {self.first} iterations; {more}")


def _ended_ok(summary: Path) -> bool:
    """Whether a run's record says it ended ok (its outputs all written)."""
    try:
        return json.loads(summary.read_text()).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False
