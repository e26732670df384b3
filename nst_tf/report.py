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
    figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
    for name in [c for c in table if c not in (*FIXED, "size")]:
        # A log axis cannot show zeros (an unused term, or TV with weight 0).
        points = [(i, v) for i, v in zip(table["iteration"], table[name], strict=True) if v > 0]
        if points:
            axes.plot(*zip(*points, strict=True), label=name)
    axes.set_yscale("log")
    axes.set_xlabel("iteration")
    axes.set_ylabel("loss (total weighted, terms unweighted)")
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


