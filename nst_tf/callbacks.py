"""What a run writes as it goes, as the loop's callbacks: progress bar, snapshots, loss log,
TensorBoard. Each sees one member of the step (a `transfer.View`)."""

import csv
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TextIO

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from nst_tf.errors import WriteError
from nst_tf.images import save_png
from nst_tf.report import columns
from nst_tf.transfer import Progress, View

log = logging.getLogger("nst_tf")


class ProgressBar:
    """A tqdm bar with the iteration, the losses and it/s. Where stderr is no terminal (a Slurm
    or nohup log, CI), where every redraw of a bar would stay in the file, a plain line every
    tenth of the run and at least every EVERY_SECONDS instead, and one at the end."""

    EVERY_SECONDS = 60.0

    def __init__(self, iterations: int, description: str = "", position: int = 0) -> None:
        """`position`: the bar's line, for the runs of a batch."""
        self.iterations, self.description, self.done = iterations, description, 0
        self.started = self.said_at = time.monotonic()
        self.bar = tqdm(total=iterations, desc=description, unit="it", dynamic_ncols=True,
                        position=position) if is_terminal(sys.stderr) else None

    def on_step(self, progress: Progress, run: View) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.set_postfix(_losses(progress), refresh=False)
            self.bar.update(1)
            return
        tenth = max(1, self.iterations // 10)
        if self.done < self.iterations and (self.done % tenth == 0 or time.monotonic()
                                            - self.said_at >= self.EVERY_SECONDS):
            self._line(progress)

    def on_end(self, progress: Progress, run: View, status: str) -> None:
        # The losses at the final image, not the step before it.
        if self.bar is None:
            self._line(progress)
            return
        self.bar.set_postfix(_losses(progress), refresh=False)
        self.bar.close()

    def _line(self, progress: Progress) -> None:
        self.said_at = time.monotonic()
        losses = ", ".join(f"{name}={value}" for name, value in _losses(progress).items())
        line = tqdm.format_meter(self.done, self.iterations, self.said_at - self.started,
                                 ncols=0, prefix=self.description, unit="it", postfix=losses)
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:
            pass  # progress that cannot be shown must not end the run


def _losses(progress: Progress) -> dict[str, str]:
    return {name: f"{value:.4g}" for name, value in progress.values.items()}


def is_terminal(stream: TextIO | None) -> bool:
    """Whether `stream` is a terminal, where a bar redrawn in place reads as one line."""
    try:
        return stream is not None and stream.isatty()
    except (OSError, ValueError):  # closed
        return False


class TimeEstimate:
    """How long the run will take here: one line after the first few steps, and a new one at
    each tenth of the run where the pace has changed by more than a quarter. The pace is the
    median time of recent steps, so one slow step (a suspended process, a moment of load)
    does not set it."""

    STEPS = 3  # timed after the first, which may still warm caches
    RECENT = 25  # steps the pace is taken over
    CHANGE = 1.25  # a pace this much faster or slower is said again
    WORTH_SAYING = 30.0  # s: a shorter run needs no estimate

    def __init__(self, iterations: int, at_most: bool = False) -> None:
        """`at_most`: the run may end sooner (it stops once converged)."""
        self.iterations, self.seen, self.before = iterations, 0, 0.0
        self.bound = "at most" if at_most else "about"
        self.steps: deque[float] = deque(maxlen=self.RECENT)
        self.said: float | None = None  # the pace last said, s/it

    def on_step(self, progress: Progress, run: View) -> None:
        self.seen += 1
        if self.seen > 1:
            self.steps.append(progress.seconds - self.before)
        self.before = progress.seconds
        check = self.seen == 1 + self.STEPS or (
            self.seen > 1 + self.STEPS and self.seen % max(1, self.iterations // 10) == 0)
        if not check or self.seen >= self.iterations:
            return
        rate = float(np.median(self.steps))
        left = rate * (self.iterations - self.seen)
        if left < self.WORTH_SAYING or (
                self.said and 1 / self.CHANGE < rate / self.said < self.CHANGE):
            return
        if self.said is None:
            log.info("%s %s to go at %.3g s/it on this machine (%d iterations)",
                     self.bound, _duration(left), rate, self.iterations)
        else:
            log.info("now %s %s to go at %.3g s/it (iteration %d of %d)",
                     self.bound, _duration(left), rate, self.seen, self.iterations)
        self.said = rate

    def on_end(self, progress: Progress, run: View, status: str) -> None:
        pass


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Snapshots:
    """Writes `snapshots/iter_NNNNN.png` every `every` updates and where the run ends, through
    `show`, which turns the optimised image into what the user sees."""

    def __init__(
        self,
        folder: Path,
        every: int,
        show: Callable[[np.ndarray], np.ndarray] = lambda image: image,
    ) -> None:
        self.folder, self.every, self.show = folder, every, show

    def path(self, iteration: int) -> Path:
        return self.folder / f"iter_{iteration:05d}.png"

    def on_step(self, progress: Progress, run: View) -> None:
        done = progress.iteration + 1  # the image now holds this many updates
        if self.every and done % self.every == 0:
            save_png(self.path(done), self.show(run.result()))

    def on_end(self, progress: Progress, run: View, status: str) -> None:
        # The image where the run ended, whatever save_every: what resume= continues from
        # (never the start, which a rerun makes again).
        path = self.path(progress.iteration)
        if progress.iteration > 0 and not path.exists():
            save_png(path, self.show(run.result()))


class TensorBoardLog:
    """Each step's losses as TensorBoard scalars, and the image every `every` updates and at
    the end, under `folder` (`tensorboard --logdir` it)."""

    def __init__(self, folder: Path, every: int,
                 show: Callable[[np.ndarray], np.ndarray] = lambda image: image) -> None:
        self.writer = tf.summary.create_file_writer(str(folder))
        self.every, self.show = every, show

    def on_step(self, progress: Progress, run: View) -> None:
        with self.writer.as_default(step=progress.iteration):
            for name, value in progress.values.items():
                tf.summary.scalar(f"loss/{name}", value)
        done = progress.iteration + 1
        if self.every and done % self.every == 0:
            self._image(done, run)

    def on_end(self, progress: Progress, run: View, status: str) -> None:
        self._image(progress.iteration, run)
        self.writer.flush()

    def _image(self, iteration: int, run: View) -> None:
        pixels = np.clip(self.show(run.result()), 0, 255) / 255.0
        with self.writer.as_default(step=iteration):
            tf.summary.image("image", pixels[None].astype(np.float32))


class LossLog:
    """Appends one CSV row per step, so a stopped or crashed run keeps its losses.

    Row k holds the losses at the image after k updates: the weighted total, then each term
    unweighted; `size` is the long side the step ran at (coarse-to-fine runs change it).
    """

    def __init__(self, csv_path: Path | None, value_names: Sequence[str],
                 earlier: Sequence[Mapping[str, float]] = (),
                 tag: Mapping[str, int] | None = None, new_file: bool = True) -> None:
        """`csv_path` None: the rows are kept in memory only (`rows`, as they are anyway).
        `earlier`: rows of the run this one resumes, so the curve continues. `tag`: leading
        columns with the same value in every row (a video's frame); `new_file=False` appends
        to the file a LossLog with the same columns began."""
        self.csv_path, self.tag = csv_path, dict(tag or {})
        self.columns = (*self.tag, *columns(value_names))
        self.rows: list[Mapping[str, object]] = []
        self._write("w" if new_file else "a", earlier, header=new_file)

    def _write(self, mode: str, rows: Sequence[Mapping[str, object]], header: bool = False
               ) -> None:
        self.rows += rows
        if self.csv_path is None:
            return
        try:
            with open(self.csv_path, mode, newline="") as file:
                writer = csv.DictWriter(file, fieldnames=self.columns)
                if header:
                    writer.writeheader()
                writer.writerows(rows)
        except OSError as error:
            raise WriteError(self.csv_path, error.strerror or str(error)) from error

    def _append(self, progress: Progress, run: View) -> None:
        self._write("a", [{**self.tag, **progress.row(), "size": max(run.shape)}])

    def on_step(self, progress: Progress, run: View) -> None:
        self._append(progress, run)

    def on_end(self, progress: Progress, run: View, status: str) -> None:
        if status != "diverged":  # a diverged run's last finite row is already logged
            self._append(progress, run)
