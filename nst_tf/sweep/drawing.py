"""A sweep's figure: its layout drawn with matplotlib, written as .png and .pdf."""

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from nst_tf.errors import UserError  # noqa: E402
from nst_tf.images import fit_long_side, read_rgb  # noqa: E402
from nst_tf.sweep.layout import Axis, SweepGrid, cell_caption, cell_note, sweep_grid  # noqa: E402
from nst_tf.sweep.records import SweepJob  # noqa: E402

FIGURE_STEM = "figure"


def write_sweep_figure(
    sweep_dir: Path, out: Path | None = None, jobs: Sequence[SweepJob] | None = None
) -> list[Path]:
    """Build a sweep's figure; write `out` (default SWEEP_DIR/figure) as .png and .pdf."""
    grid = sweep_grid(sweep_dir, jobs)
    stem = out if out is not None else sweep_dir / FIGURE_STEM
    if stem.suffix.lower() in (".png", ".pdf"):
        stem = stem.with_suffix("")
    paths = [stem.with_name(f"{stem.name}.png"), stem.with_name(f"{stem.name}.pdf")]
    try:
        stem.parent.mkdir(parents=True, exist_ok=True)
        draw_sweep_figure(grid, paths)
    except OSError as error:
        raise UserError(
            f"cannot write the figure {paths[0]} ({error.strerror or error}); "
            "choose a writable place with --out"
        ) from error
    return paths


def draw_sweep_figure(grid: SweepGrid, paths: list[Path]) -> None:
    """Draw the grid with its inputs, labels and final losses; save it to each path."""
    n_rows, n_cols = len(grid.cells), len(grid.cells[0])
    fixed = [t for t in grid.thumbnails if t.along == "all"]
    per_row = [t for t in grid.thumbnails if t.along == "rows"]
    per_column = [t for t in grid.thumbnails if t.along == "columns"]
    lead, top = int(bool(fixed)) + len(per_row), len(per_column)
    aspect = _aspect(grid)
    panel = 1.8  # inches per panel's width; text gets a strip below each row
    width = panel * (lead + n_cols) + 0.5
    figure = plt.figure(
        figsize=(width, (panel * aspect + 0.35) * (top + n_rows) + 0.9),
        dpi=150,
        layout="constrained",
    )
    spec = figure.add_gridspec(top + n_rows, lead + n_cols)

    def label(axis: Axis, index: int, sep: str) -> str:
        return f"{axis.name}{sep}{axis.labels[index]}" if axis.name else axis.labels[index]

    if fixed:  # the inputs every job shares, from the top of a column of their own
        inputs = spec[top:, 0].subgridspec(max(len(fixed), n_rows), 1)
        for i, thumb in enumerate(fixed):
            ax = figure.add_subplot(inputs[i])
            _show(ax, thumb.paths[0])
            ax.set_title(thumb.role, fontsize=8)
    for i, thumb in enumerate(per_column):
        for c in range(n_cols):
            ax = figure.add_subplot(spec[i, lead + c])
            _show(ax, thumb.paths[c])
            if i == 0 and grid.columns:
                ax.set_title(label(grid.columns, c, " = "), fontsize=8)
            if c == 0:
                ax.set_ylabel(thumb.role, fontsize=8)
    for r in range(n_rows):
        row_axes = []
        for j, thumb in enumerate(per_row):
            ax = figure.add_subplot(spec[top + r, int(bool(fixed)) + j])
            _show(ax, thumb.paths[r])
            if r == 0:
                ax.set_title(thumb.role, fontsize=8)
            row_axes.append(ax)
        for c in range(n_cols):
            ax = figure.add_subplot(spec[top + r, lead + c])
            job = grid.cells[r][c]
            if grid.titles is not None:
                if job is None:  # past the last trial
                    ax.set_axis_off()
                    continue
                ax.set_title(grid.titles[r][c], fontsize=6)
            mark = _mark_color(job)
            # About 20 characters per inch at 6 pt; less, to keep clear of the frame.
            if note := cell_note(job, int(panel * 16)):
                _show(ax, (), note, mark or "grey")
                ax.set_box_aspect(aspect)  # its frame as large as the results beside it
            else:
                _show(ax, (job.result,) if job and job.result else ())
            if mark:
                for spine in ax.spines.values():
                    spine.set(visible=True, color=mark, linewidth=1.5)
            ax.set_xlabel(cell_caption(job), fontsize=6, color=mark or "black")
            if r == 0 and not per_column and grid.columns:
                ax.set_title(label(grid.columns, c, " = "), fontsize=8)
            row_axes.append(ax)
        if grid.rows:
            row_axes[0].set_ylabel(label(grid.rows, r, "\n"), fontsize=8)
    # About 12 characters per inch at 10 pt: wrap so a narrow grid does not clip the settings.
    figure.suptitle(f"{grid.title}\n{textwrap.fill(grid.subtitle, int(width * 12))}", fontsize=10)
    if grid.credits:
        # About 20 characters per inch at 6 pt.
        figure.supxlabel(textwrap.fill(grid.credits, int(width * 20)), fontsize=6)
    for path in paths:
        figure.savefig(path.with_name(f".{path.stem}.tmp{path.suffix}"))
    plt.close(figure)
    for path in paths:  # only now, so a failed save never leaves half a figure in place
        os.replace(path.with_name(f".{path.stem}.tmp{path.suffix}"), path)


def _aspect(grid: SweepGrid) -> float:
    """Height / width of the first result, to size the figure."""
    for row in grid.cells:
        for job in row:
            if job and job.shown:
                with Image.open(job.shown) as image:
                    return image.height / image.width
    return 0.75


def _show(
    axes: plt.Axes, paths: tuple[Path, ...], note: str = "no result", color: str = "grey"
) -> None:
    """The images side by side at one height, or a note saying why there are none."""
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_visible(False)
    images, unreadable = [], []
    for path in paths:
        try:
            images.append(fit_long_side(read_rgb(path), 512))  # inputs can be large
        except UserError:
            unreadable.append(path.name)
    if unreadable or not images:
        note = f"cannot read\n{unreadable[0]}" if unreadable else note
        axes.text(0.5, 0.5, note, ha="center", va="center", fontsize=6, color=color,
                  transform=axes.transAxes)
        return
    height = min(image.height for image in images)
    gap = np.full((height, max(1, height // 32), 3), 255, np.uint8)
    strips = [np.asarray(image.resize((max(1, round(image.width * height / image.height)),
                                       height))) for image in images]
    axes.imshow(np.hstack([part for strip in strips for part in (strip, gap)][:-1]))


def _mark_color(job: SweepJob | None) -> str | None:
    """The colour of a cell's frame and text: orange for an interrupted job, red when not shown."""
    if job is None or job.status == "ok":
        return None
    return "tab:orange" if job.status == "interrupted" else "tab:red"
