"""A sweep's end: sweep.csv (how each job ended) and its figure, every job's result in a grid
labelled by what the sweep varied. Reads only files, so it imports no TensorFlow."""

import csv
import io
import json
import math
import os
import re
import textwrap
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never open a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from hydra.core.override_parser.overrides_parser import OverridesParser  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402
from PIL import Image  # noqa: E402

from nst_tf.backbones import BACKBONES  # noqa: E402
from nst_tf.errors import UserError  # noqa: E402
from nst_tf.files import write_atomic  # noqa: E402
from nst_tf.images import fit_long_side, read_rgb  # noqa: E402

FIGURE_STEM = "figure"
# Preset fields that only say where an image comes from; they change with its name.
_IMAGE_DETAILS = ("path", "file", "url", "md5", "title", "author", "licence")
_NAMES = {
    "beta": "β",
    "tv_weight": "TV weight",
    "style_layers": "style layers",
    "content_layers": "content layers",
    "style_layer_weights": "style layer weights",
    "content_layer_weights": "content layer weights",
}
# Settings worth a word in the subtitle when every job shares them, and how to say them.
_SUBTITLE = {
    "content.name": "content {}".format,
    "style.name": "style {}".format,
    "size": "{} px".format,
    "iterations": "{} iterations".format,
    "optimizer.name": "{}".format,
    "init": "init {}".format,
    "model.pooling": "{} pooling".format,
    "model.normalize": lambda on: "normalised VGG19" if on == "true" else "VGG19 not normalised",
}
_ABSENT = object()  # a key one job has and another has not
# Hydra's grid sweeper; any other (e.g. Optuna's) samples trials, which form no grid.
_GRID_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
_TRIALS_PER_ROW = 6

TABLE_NAME = "sweep.csv"
TABLE_COLUMNS = ("job", "overrides", "status", "reason", "exit_code")  # then the final losses
# Each status and its exit code when summary.json gives none (an older app's Ctrl-C: SIGINT).
_EXIT_CODES = {"ok": 0, "failed": 1, "diverged": 3, "interrupted": 130, "skipped": 130}
_SHOWN = ("ok", "interrupted")  # statuses whose cell shows the job's result.png
NO_RECORD = "no summary.json: the job ended without a record (killed?)"


@dataclass
class SweepJob:
    """One job of a sweep, as its files describe it."""

    dir: Path
    config: dict[str, Any]  # resolved (summary.json), else as Hydra saved it
    overrides: dict[str, Any]  # override key without its +/~ prefix -> parsed value
    task_overrides: list[str]  # as given, e.g. "alpha=1e-3"
    summary: dict[str, Any]  # {} when the job wrote none, or it cannot be read
    status: str  # ok, failed, diverged, interrupted or skipped
    reason: str | None  # one line; None when ok
    exit_code: int

    @property
    def result(self) -> Path | None:
        path = self.dir / "result.png"
        return path if path.is_file() else None

    @property
    def shown(self) -> Path | None:
        """The image the figure shows: none for a job that failed, diverged or was skipped."""
        return self.result if self.status in _SHOWN else None

    @property
    def final(self) -> dict[str, Any]:
        """The last step's iteration, seconds and losses; {} if no step ran."""
        final = self.summary.get("final")
        return final if isinstance(final, dict) else {}


@dataclass
class Axis:
    """One swept key (or config group) and the label of each of its values, in sweep order."""

    key: str
    name: str  # as shown, e.g. "α/β"; "" for a config group, whose labels say it all
    labels: list[str]


@dataclass
class Thumbnails:
    """An input image of the sweep: the same for all jobs, or one per row or column."""

    role: str  # "content" or "style"
    along: str  # "all", "rows" or "columns"
    paths: list[tuple[Path, ...]]  # per row or column; several for a blend of styles


@dataclass
class SweepGrid:
    """What a sweep's figure shows: jobs in rows x columns, labels, inputs and credits."""

    title: str
    subtitle: str
    credits: str
    rows: Axis | None  # None: a single row
    columns: Axis | None  # None: a single column
    cells: list[list[SweepJob | None]]  # None where no job ran
    thumbnails: list[Thumbnails]
    titles: list[list[str]] | None = None  # per cell, for trials; None: the axes label them


def read_sweep(sweep_dir: Path) -> list[SweepJob]:
    """Every Hydra job under `sweep_dir` (a dir holding .hydra/config.yaml), in job order."""
    if not sweep_dir.is_dir():
        raise UserError(
            f"sweep dir {sweep_dir} not found; give the dir a multirun wrote (its hydra.sweep.dir)"
        )
    job_dirs = [saved.parent.parent for saved in sweep_dir.glob("**/.hydra/config.yaml")]
    if not job_dirs:
        raise UserError(
            f"no Hydra jobs in {sweep_dir}; give the dir a multirun wrote (its hydra.sweep.dir)"
        )
    job_dirs.sort(key=lambda job_dir: (_job_number(job_dir), _natural_key(str(job_dir))))
    return [_read_job(job_dir) for job_dir in job_dirs]


def write_sweep_table(sweep_dir: Path, jobs: Sequence[SweepJob]) -> Path:
    """SWEEP_DIR/sweep.csv: per job its overrides, status, reason, exit code and final losses."""
    # The final values' names come from the jobs: the objective's terms are configurable.
    final = dict.fromkeys(["iteration", "seconds", *(k for job in jobs for k in job.final)])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*TABLE_COLUMNS, *final], lineterminator="\n")
    writer.writeheader()
    for job in jobs:
        writer.writerow({
            "job": job.dir.relative_to(sweep_dir).as_posix(),
            "overrides": " ".join(job.task_overrides),
            "status": job.status,
            "reason": job.reason,
            "exit_code": job.exit_code,
            **{key: job.final.get(key) for key in final},  # None is written blank
        })
    path = sweep_dir / TABLE_NAME
    write_atomic(path, text.getvalue().encode())  # never a half-written table
    return path


def sweep_tally(jobs: Sequence[SweepJob]) -> str:
    """How the jobs ended, e.g. '3 jobs, 2 ok, 1 failed'."""
    counts = Counter(job.status for job in jobs)
    parts = [f"{counts[status]} {status}" for status in _EXIT_CODES if counts[status]]
    return ", ".join([f"{len(jobs)} job{'' if len(jobs) == 1 else 's'}", *parts])


def sweep_exit_code(jobs: Sequence[SweepJob]) -> int:
    """0 when every job is ok; a stopped sweep's code (e.g. 143 for SIGTERM); else 1."""
    for job in jobs:
        if job.status in ("interrupted", "skipped"):
            return job.exit_code
    return 0 if all(job.status == "ok" for job in jobs) else 1


def sweep_grid(sweep_dir: Path, jobs: Sequence[SweepJob] | None = None) -> SweepGrid:
    """Lay out a sweep: first varying key = rows, second = columns; one key gives one row.

    `jobs`: read_sweep(sweep_dir), if already read.
    """
    jobs = read_sweep(sweep_dir) if jobs is None else list(jobs)
    if not any(job.shown for job in jobs):
        raise UserError(
            f"nothing to draw in {sweep_dir}: no job left a result.png ({sweep_tally(jobs)}); "
            "fix what failed and run the sweep again"
        )
    # paths.* say where files are looked up, not what a job did; and a job that failed early
    # has only Hydra's config, where they are still unresolved.
    flat = [{k: v for k, v in _flatten(job.config).items() if not k.startswith("paths.")}
            for job in jobs]
    # Swept keys come from the overrides; without them, from the configs themselves.
    groups = _varying([job.overrides for job in jobs]) or _varying(flat)
    if _sampled(jobs):
        return _trials_grid(sweep_dir, jobs, flat, [k for group in groups for k in group])
    if len(groups) > 2:
        keys = ", ".join(group[0] for group in groups)
        raise UserError(
            f"the sweep varies {len(groups)} settings ({keys}); a figure shows at most two "
            "(rows, columns): sweep fewer keys, or bundle settings in a config group "
            "like conf/panel/"
        )
    axes: list[Axis] = []
    positions: list[list[int]] = []  # per axis, each job's index along it
    for group in groups:
        texts = [_canonical(_lookup(job, flat[i], group[0])) for i, job in enumerate(jobs)]
        positions.append(list(_partition(texts)))
        axes.append(_axis(group, jobs, flat, positions[-1], len(set(texts))))
    rows = axes[0] if len(axes) == 2 else None
    columns = axes[-1] if axes else None
    row_of = positions[0] if rows else [0] * len(jobs)
    column_of = positions[-1] if columns else [0] * len(jobs)
    n_rows, n_cols = max(row_of) + 1, max(column_of) + 1
    cells: list[list[SweepJob | None]] = [[None] * n_cols for _ in range(n_rows)]
    for job, r, c in zip(jobs, row_of, column_of, strict=True):
        cells[r][c] = job
    thumbnails = [
        t for role in ("content", "style")
        if (t := _thumbnails(role, jobs, row_of, column_of, n_rows, n_cols))
    ]
    experiment = jobs[0].overrides.get("experiment")
    title = str(experiment) if experiment else sweep_dir.resolve().name
    return SweepGrid(
        title=title,
        subtitle=_subtitle(flat, {k for group in groups for k in group}),
        credits=_credits(flat),
        rows=rows,
        columns=columns,
        cells=cells,
        thumbnails=thumbnails,
    )


def _sampled(jobs: list[SweepJob]) -> bool:
    """Whether the sweeper sampled the jobs, as the first job's saved Hydra config says."""
    try:
        saved = OmegaConf.load(jobs[0].dir / ".hydra" / "hydra.yaml")
    except Exception:  # no record: lay out a grid, as for every sweep before sweepers
        return False
    target = OmegaConf.select(saved, "hydra.sweeper._target_", default=None)
    return target not in (None, _GRID_SWEEPER)


def _trials_grid(sweep_dir: Path, jobs: list[SweepJob], flat: list[dict[str, Any]],
                 keys: list[str]) -> SweepGrid:
    """A search's trials in job order, rows of _TRIALS_PER_ROW, each titled with its objective
    and the settings it tried."""
    n_cols = min(len(jobs), _TRIALS_PER_ROW)
    n_rows = math.ceil(len(jobs) / n_cols)
    cells: list[list[SweepJob | None]] = [[None] * n_cols for _ in range(n_rows)]
    titles = [[""] * n_cols for _ in range(n_rows)]
    for index, job in enumerate(jobs):
        r, c = divmod(index, n_cols)
        cells[r][c] = job
        objective = job.config.get("objective", "total")
        score = job.final.get(objective)
        head = f"trial {index}" + (f" · {objective} {_scientific(score, 3)}"
                                   if isinstance(score, int | float) else "")
        tried = ", ".join(_tried(k, job.overrides[k], flat[index], flat)
                          for k in keys if k in job.overrides)
        titles[r][c] = "\n".join([head, *textwrap.wrap(tried, 30)])
    row_of = [i // n_cols for i in range(len(jobs))]
    column_of = [i % n_cols for i in range(len(jobs))]
    thumbnails = [
        t for role in ("content", "style")
        if (t := _thumbnails(role, jobs, row_of, column_of, n_rows, n_cols)) and t.along == "all"
    ]
    return SweepGrid(
        title=f"{sweep_dir.resolve().name}: {len(jobs)} trials",
        subtitle=_subtitle(flat, set(keys)),
        credits=_credits(flat),
        rows=None,
        columns=None,
        cells=cells,
        thumbnails=thumbnails,
        titles=titles,
    )


def _tried(key: str, value: Any, settings: dict[str, Any], flat: list[dict[str, Any]]) -> str:
    """What a trial set `key` to: a config group's option (adam) says itself, a setting
    needs its name (learning_rate 8.03, sampled floats to 3 digits)."""
    if key not in settings and isinstance(value, str):
        return value
    if isinstance(value, float):
        value = float(f"{value:.3g}")
    return f"{_display_name(key.rsplit('.', 1)[-1], flat)} {format_value(value)}"


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


def cell_caption(job: SweepJob | None) -> str:
    """The line under a shown cell: its final losses, and where an interrupted job stopped."""
    if job is None or job.status not in _SHOWN:
        return ""
    final, parts = job.final, []
    if final:
        parts.append(f"content {_scientific(final['content'], 2)} · "
                     f"style {_scientific(final['style'], 2)}")
    if job.status == "interrupted":
        done = job.summary.get("iterations_done", final.get("iteration"))
        parts.append("(stopped)" if done is None else f"(stopped at {done})")
    return " ".join(parts)


def cell_note(job: SweepJob | None, width: int) -> str:
    """What a cell says instead of a result: status and reason in lines of `width`, or ''."""
    if job is None or job.status in _SHOWN:
        return ""
    text = f"{job.status}: {job.reason}" if job.reason else job.status
    return "\n".join(textwrap.wrap(text, width, max_lines=6, placeholder=" …"))


def format_value(value: Any) -> str:
    """A setting as a figure shows it: 1e-3, not 0.001; style layers as 'conv1_1 … conv3_1'."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value) or 0.1 <= abs(value) < 1e4:
            return f"{value:g}"
        return _scientific(value, 3)
    if isinstance(value, list | tuple):
        if value and all(isinstance(v, str) and v in _CHAINS[-1] for v in value):
            return compact_layers(value)
        return ", ".join(format_value(v) for v in value)
    if isinstance(value, dict):  # e.g. one style of a blend: "starry 0.5"
        return " ".join(format_value(v) for v in value.values() if v is not None)
    return str(value)


def compact_layers(layers: list[str] | tuple[str, ...]) -> str:
    """'conv1_1 … conv4_1' for a run of three or more consecutive layers; else all of them."""
    for chain in _CHAINS:
        if len(layers) > 2 and all(name in chain for name in layers):
            start = chain.index(layers[0])
            if tuple(layers) == chain[start:start + len(layers)]:
                return f"{layers[0]} … {layers[-1]}"
    return ", ".join(layers)


# Runs of layers a figure may shorten: each backbone's block starts (the paper's style layers),
# each one's layers in order, and last every known layer name.
_CHAINS = (
    *(backbone.block_starts for backbone in BACKBONES.values()),
    *(backbone.layers for backbone in BACKBONES.values()),
    tuple(dict.fromkeys(name for backbone in BACKBONES.values() for name in backbone.layers)),
)


def _scientific(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return f"{value:g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def _natural_key(text: str) -> list[object]:
    # "job 10" after "job 9"
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _job_number(job_dir: Path) -> float:
    saved = job_dir / ".hydra" / "hydra.yaml"
    try:
        number = OmegaConf.select(OmegaConf.load(saved), "hydra.job.num", default=None)
    except Exception:  # a missing or damaged file only costs the order: fall back to names
        return math.inf
    return number if isinstance(number, int) else math.inf


def _read_job(job_dir: Path) -> SweepJob:
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        summary, outcome = {}, ("failed", NO_RECORD, 1)
    except (OSError, ValueError) as error:
        summary, outcome = {}, ("failed", f"summary.json unreadable: {error}", 1)
    else:
        outcome = _outcome(summary)
    config = summary.get("config")
    if not isinstance(config, dict):
        saved = OmegaConf.load(job_dir / ".hydra" / "config.yaml")
        config = OmegaConf.to_container(saved, resolve=False)
    overrides: dict[str, Any] = {}
    lines: list[str] = []
    listed = job_dir / ".hydra" / "overrides.yaml"
    if listed.is_file():
        lines = [str(x) for x in OmegaConf.to_container(OmegaConf.load(listed))]
        for override in OverridesParser.create().parse_overrides(lines):
            key = override.get_key_element().lstrip("+~")
            overrides[key] = None if override.is_delete() else override.value()
    status, reason, exit_code = outcome
    return SweepJob(dir=job_dir, config=config, overrides=overrides, task_overrides=lines,
                    summary=summary, status=status, reason=reason, exit_code=exit_code)


def _outcome(summary: dict[str, Any]) -> tuple[str, str | None, int]:
    """(status, reason, exit code) as a job's summary.json records them."""
    status = summary.get("status")
    if status is None:  # written before jobs recorded a status: finished, or stopped by Ctrl-C
        status = "interrupted" if summary.get("interrupted") else "ok"
    elif status not in _EXIT_CODES:
        return "failed", f"unknown status {status!r} in summary.json", 1
    reason = summary.get("reason")
    code = summary.get("exit_code")
    if not isinstance(code, int) or (code == 0) != (status == "ok"):
        code = _EXIT_CODES[status]  # never let a failed job pass for ok, or the reverse
    return status, None if reason is None else " ".join(str(reason).split()), code


def _flatten(node: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config as {"model.pooling": "avg", ...}; lists stay whole."""
    flat: dict[str, Any] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _canonical(value: Any) -> str:
    return "<absent>" if value is _ABSENT else json.dumps(value, sort_keys=True, default=str)


def _partition(texts: list[str]) -> tuple[int, ...]:
    first = {}
    return tuple(first.setdefault(t, len(first)) for t in texts)


def _varying(settings: list[dict[str, Any]]) -> list[list[str]]:
    """Keys whose value differs between jobs; keys that change together form one group."""
    groups: dict[tuple[int, ...], list[str]] = {}
    for key in dict.fromkeys(k for s in settings for k in s):
        texts = [_canonical(s.get(key, _ABSENT)) for s in settings]
        if len(set(texts)) > 1:
            groups.setdefault(_partition(texts), []).append(key)
    return list(groups.values())


def _lookup(job: SweepJob, flat: dict[str, Any], key: str) -> Any:
    return job.overrides[key] if key in job.overrides else flat.get(key, _ABSENT)


def _axis(
    group: list[str], jobs: list[SweepJob], flat: list[dict[str, Any]], position: list[int],
    size: int,
) -> Axis:
    key = group[0]
    values: list[Any] = [None] * size
    for job, settings, index in zip(jobs, flat, position, strict=True):
        values[index] = _lookup(job, settings, key)
    if key in flat[0] or not all(isinstance(v, str) for v in values):
        return Axis(key, _display_name(key, flat), [format_value(v) for v in values])
    # A config group (e.g. panel/fig2=B): its option, plus the settings it bundles.
    bundled = [k for k in _bundled(flat, position) if not _is_image_detail(k)]
    labels = []
    for index, option in enumerate(values):
        settings = flat[position.index(index)]
        tokens = set(re.split(r"[_\-=/,\s]+", option))
        said = []
        for k in bundled:
            text, leaf = format_value(settings.get(k)), k.rsplit(".", 1)[-1]
            if text not in tokens and f"{leaf}{text}" not in tokens:  # the name says it already
                said.append(text if leaf == "name" else f"{_display_name(k, flat)} {text}")
        labels.append(f"{option}\n{', '.join(said)}" if said else option)
    return Axis(key, "", labels)


def _display_name(key: str, flat: list[dict[str, Any]]) -> str:
    if key == "alpha":  # with beta = 1, alpha is the paper's ratio
        return "α/β" if all(s.get("beta") == 1 for s in flat) else "α"
    return _NAMES.get(key, key)


def _is_image_detail(key: str) -> bool:
    role, _, leaf = key.partition(".")
    return role in ("content", "style") and leaf in _IMAGE_DETAILS


def _bundled(flat: list[dict[str, Any]], position: list[int]) -> list[str]:
    """Config keys that vary between jobs but never within one value of the axis."""
    keys = []
    for key in dict.fromkeys(k for s in flat for k in s):
        texts = [_canonical(s.get(key, _ABSENT)) for s in flat]
        seen: dict[int, str] = {}
        if len(set(texts)) > 1 and all(
            seen.setdefault(p, t) == t for p, t in zip(position, texts, strict=True)
        ):
            keys.append(key)
    return keys


def _thumbnails(
    role: str, jobs: list[SweepJob], row_of: list[int], column_of: list[int],
    n_rows: int, n_cols: int,
) -> Thumbnails | None:
    """Where the `role` image varies decides where it is shown; per cell it is not shown."""
    located = [(paths, r, c) for job, r, c in zip(jobs, row_of, column_of, strict=True)
               if (paths := _input_paths(job.summary, role))]
    if not located:
        return None
    if len({paths for paths, _, _ in located}) == 1:
        return Thumbnails(role, "all", [located[0][0]])
    for along, index, size in (("columns", 2, n_cols), ("rows", 1, n_rows)):
        seen: dict[int, tuple[Path, ...]] = {}
        if all(seen.setdefault(item[index], item[0]) == item[0] for item in located):
            return Thumbnails(role, along, [seen.get(i, ()) for i in range(size)])
    return None


def _input_paths(summary: dict[str, Any], role: str) -> tuple[Path, ...]:
    """The image files a job read for `role`; a blend of styles lists each under "styles"."""
    entries = summary.get(f"{role}s", summary.get(role))
    if isinstance(entries, dict):
        entries = [entries]
    if not isinstance(entries, list):
        return ()
    return tuple(Path(e["path"]) for e in entries if isinstance(e, dict) and e.get("path"))


def _subtitle(flat: list[dict[str, Any]], swept: set[str]) -> str:
    parts = []
    for key, say in _SUBTITLE.items():
        values = {_canonical(s.get(key, _ABSENT)) for s in flat}
        blend = key.startswith("style.") and any(s.get("styles") for s in flat)
        if key not in swept and key in flat[0] and len(values) == 1 and not blend:
            parts.append(say(format_value(flat[0][key])))
    return " · ".join(parts)


def _credits(flat: list[dict[str, Any]]) -> str:
    """Who made the pictures (the Tübingen photo's CC BY licence asks for the author's name)."""
    credits = []
    for role in ("content", "style"):
        for settings in flat:
            if role == "style" and settings.get("styles"):
                continue  # a blend names its presets in `styles`; `style` is unused then
            title, author, licence = (settings.get(f"{role}.{k}") for k in
                                      ("title", "author", "licence"))
            if title and not settings.get(f"{role}.path"):
                line = f"{title}: " + ", ".join(str(x) for x in (author, licence) if x)
                if line not in credits:
                    credits.append(line)
    return "; ".join(credits)


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
