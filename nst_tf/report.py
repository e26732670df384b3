"""What a run leaves behind besides images: the loss table, its plot, and a summary."""

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from nst_tf.transfer import VALUE_NAMES, Progress, StyleTransfer  # noqa: E402

COLUMNS = ("iteration", "seconds", *VALUE_NAMES)


class LossLog:
    """Streams one CSV row per step (so an interrupted run keeps its losses) and plots at the end.

    Row k holds the losses at the image after k updates; `content` and `style` are unweighted.
    """

    def __init__(self, csv_path: Path, plot_path: Path) -> None:
        self.csv_path, self.plot_path = csv_path, plot_path
        self._file = open(csv_path, "w", newline="")  # noqa: SIM115 - closed in on_end
        self._writer = csv.DictWriter(self._file, fieldnames=COLUMNS)
        self._writer.writeheader()

    def on_step(self, progress: Progress, transfer: StyleTransfer) -> None:
        self._writer.writerow(progress.row())
        self._file.flush()

    def on_end(self, progress: Progress, transfer: StyleTransfer, interrupted: bool) -> None:
        self._writer.writerow(progress.row())
        self._file.close()
        plot_losses(read_losses(self.csv_path), self.plot_path)


def read_losses(csv_path: Path) -> dict[str, list[float]]:
    """The loss table as columns."""
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    return {column: [float(row[column]) for row in rows] for column in COLUMNS}


def plot_losses(table: Mapping[str, list[float]], path: Path) -> None:
    """Every loss term against iteration, log y axis."""
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name in VALUE_NAMES:
        # A log axis cannot show zeros (an unused term, or TV with weight 0).
        points = [(i, v) for i, v in zip(table["iteration"], table[name], strict=True) if v > 0]
        if points:
            axes.plot(*zip(*points, strict=True), label=name)
    axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss (content, style, tv unweighted)")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure: plt.Figure, path: Path) -> None:
    # Written beside the target, then renamed, so a half-written file never stands as a result.
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, path)


def write_summary(path: Path, summary: Mapping[str, object]) -> None:
    """A JSON record of the run's settings, final losses and timings."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    os.replace(tmp, path)
