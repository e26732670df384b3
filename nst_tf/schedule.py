"""A run's course: the sizes it optimises at (coarse to fine), the iterations at each, and
where a resumed run counts on from. Drivers walk its stages instead of writing the loop."""

from collections.abc import Sequence
from dataclasses import dataclass

from nst_tf.config import RunConfig
from nst_tf.resume import Checkpoint


@dataclass(frozen=True)
class Stage:
    """`iterations` at `size` px on the content's long side, computed in tiles of `tile` px
    (None: the whole image at once)."""

    size: int
    iterations: int
    tile: int | None = None


@dataclass(frozen=True)
class Schedule:
    """The stages in order. The first starts at update `first`, after `seconds` of earlier
    wall time (a resumed run); each later one starts from the previous result, upsampled."""

    stages: tuple[Stage, ...]
    first: int = 0
    seconds: float = 0.0

    @classmethod
    def of(cls, settings: RunConfig, checkpoint: Checkpoint | None = None,
           tiles: Sequence[int | None] = ()) -> "Schedule":
        """`tiles`: each stage's tile size, as the memory check chose (none: all whole)."""
        sizes = settings.scales or [settings.size]
        iterations = list(settings.scale_iterations or [settings.iterations] * len(sizes))
        tiles = list(tiles) or [None] * len(sizes)
        if checkpoint is None:
            return cls(tuple(map(Stage, sizes, iterations, tiles)))
        iterations[0] = settings.iterations - checkpoint.iteration
        return cls(tuple(map(Stage, sizes, iterations, tiles)), checkpoint.iteration,
                   checkpoint.seconds)

    @property
    def coarse_to_fine(self) -> bool:
        return len(self.stages) > 1
