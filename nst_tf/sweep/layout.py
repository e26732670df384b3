"""A sweep's layout: its jobs in a grid of what it varied (rows x columns) or a search's trials
in order, with the labels, subtitle, credits and cell texts a figure shows."""

import json
import math
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_tf.backbones import BACKBONES
from nst_tf.errors import UserError
from nst_tf.sweep.records import SHOWN_STATUSES, SweepJob, hydra_setting, read_sweep, sweep_tally

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
    if len(thumbnails) == 2 and thumbnails[0].paths == thumbnails[1].paths:
        thumbnails = thumbnails[1:]  # the style as content too (a texture): shown once
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
    target = hydra_setting(jobs[0].dir, "hydra.sweeper._target_")
    # No record: lay out a grid, as for every sweep before sweepers.
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


def cell_caption(job: SweepJob | None) -> str:
    """The line under a shown cell: its final losses, and where an interrupted job stopped."""
    if job is None or job.status not in SHOWN_STATUSES:
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
    if job is None or job.status in SHOWN_STATUSES:
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
    # Gatys et al.'s texture model: conv1_1, then the poolings
    *((backbone.layers[0], *(n for n in backbone.layers if n.startswith("pool")))
      for backbone in BACKBONES.values()),
    *(backbone.layers for backbone in BACKBONES.values()),
    # the convolutions alone (conv1_1 … conv4_4 names no pooling)
    *(tuple(n for n in backbone.layers if not n.startswith("pool"))
      for backbone in BACKBONES.values()),
    tuple(dict.fromkeys(name for backbone in BACKBONES.values() for name in backbone.layers)),
)


def _scientific(value: float, digits: int) -> str:
    if not math.isfinite(value):
        return f"{value:g}"
    mantissa, exponent = f"{value:.{digits - 1}e}".split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


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
    # not the group's own keys (style_loss.layers for style_loss=mrf): its option names them
    bundled = [k for k in _bundled(flat, position)
               if not _is_image_detail(k) and not k.startswith(f"{key.lstrip('+')}.")]
    labels = []
    for index, option in enumerate(values):
        settings = flat[position.index(index)]
        tokens = set(re.split(r"[_\-=/,\s]+", option))
        said = []
        for k in bundled:
            text, leaf = format_value(settings.get(k)), k.rsplit(".", 1)[-1]
            preset = k.rpartition(".")[0]  # its keys (style_loss.layers) where option names it
            if preset and format_value(settings.get(f"{preset}.name")) in (*tokens, option):
                continue
            if text and text not in (*tokens, option) and f"{leaf}{text}" not in tokens:
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
