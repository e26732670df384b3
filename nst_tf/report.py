"""What a run leaves behind besides images: the loss table's layout, its plot, and a summary.
(The loop's LossLog writes the table as the run goes.)"""

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402

from nst_tf.files import open_atomic, write_atomic  # noqa: E402

FIXED = ("iteration", "seconds")  # then the objective's values (total first), then "size"


def columns(value_names: Sequence[str]) -> tuple[str, ...]:
    """losses.csv's header for an objective returning `value_names`."""
    return (*FIXED, *value_names, "size")


def read_losses(csv_path: Path) -> dict[str, list[float]]:
    """The loss table as columns."""
    with open(csv_path, newline="") as file:
        reader = csv.DictReader(file)
        rows = list(reader)
        names = reader.fieldnames or ()
    return {column: [float(row[column]) for row in rows] for column in names}


def plot_losses(table: Mapping[str, list[float]], path: Path) -> None:
    """Every loss term against iteration, log y axis."""
    _log_plot({name: list(zip(table["iteration"], table[name], strict=True))
               for name in _terms(table)}, "iteration", "loss (total weighted, terms unweighted)",
              path)


def plot_frames(table: Mapping[str, list[float]], path: Path) -> None:
    """A video's losses per frame, each at the frame's last iteration (of its last pass), log y
    axis."""
    last = {int(frame): row for row, frame in enumerate(table["frame"])}
    _log_plot({name: [(frame, table[name][row]) for frame, row in sorted(last.items())]
               for name in _terms(table)}, "frame",
              "loss at the frame's end (total weighted, terms unweighted)", path)


def _terms(table: Mapping[str, list[float]]) -> list[str]:
    return [c for c in table if c not in ("pass", "frame", *FIXED, "size")]


def _log_plot(series: Mapping[str, list[tuple[float, float]]], x: str, y: str, path: Path
              ) -> None:
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name, points in series.items():
        # A log axis cannot show zeros (an unused term, or TV with weight 0).
        points = [(a, b) for a, b in points if b > 0]
        if points:
            axes.plot(*zip(*points, strict=True), label=name)
    axes.set_yscale("log")
    axes.set_xlabel(x)
    axes.set_ylabel(y)
    if axes.lines:  # none when every value is non-finite or 0: the plot stays, empty
        axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    _save_figure(figure, path)


def _save_figure(figure: plt.Figure, path: Path) -> None:
    # Written beside the target, then renamed, so a half-written file never stands as a result.
    try:
        with open_atomic(path) as file:
            figure.savefig(file, format=path.suffix.lstrip("."))
    finally:
        plt.close(figure)


def write_summary(path: Path, summary: Mapping[str, object]) -> None:
    """A JSON record of the run's settings, final losses and timings."""
    write_atomic(path, (json.dumps(summary, indent=2, default=str) + "\n").encode())


