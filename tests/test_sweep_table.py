"""How a sweep's jobs ended: sweep.csv, the figure's marked cells and the multirun's exit code,
on synthetic job dirs laid out as Hydra and the app write them."""

import csv
import json
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from nst_tf.errors import UserError
from nst_tf.sweep import (
    NO_RECORD,
    TABLE_COLUMNS,
    cell_caption,
    cell_note,
    read_sweep,
    sweep_grid,
    write_sweep_figure,
    write_sweep_table,
)
from nst_tf.sweep.overrides import parse_override
from nst_tf.sweep_callback import SweepEnd
from tests.helpers import figure_size, marked

FINAL = {"iteration": 10, "seconds": 1.5, "total": 3.0, "content": 2.0, "style": 1.0, "tv": 0.0}
NEGATIVE = "alpha=-1 is negative; give a weight >= 0 (e.g. alpha=1e-3)"
# What each kind of job leaves in summary.json (besides config and overrides).
OK = {"status": "ok", "reason": None, "exit_code": 0, "final": FINAL, "interrupted": False,
      "iterations_done": 10}
FAILED = {"status": "failed", "reason": NEGATIVE, "exit_code": 2}  # failed validation: no config
INTERRUPTED = {"status": "interrupted", "reason": "stopped by SIGTERM", "exit_code": 143,
               "final": {**FINAL, "iteration": 5}, "interrupted": True, "iterations_done": 5}
DIVERGED = {"status": "diverged", "reason": "total loss is nan at iteration 3", "exit_code": 3,
            "final": {**FINAL, "iteration": 3, "total": float("nan")}}
SKIPPED = {"status": "skipped", "reason": "the sweep was stopped by SIGTERM", "exit_code": 143}


def make_job(sweep: Path, num: int, overrides: list[str], summary: dict | None,
             config: dict | None = None) -> Path:
    """A job dir: Hydra's .hydra files, and the app's summary.json and result.png if it ran."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    # As Hydra saves it: composed, interpolations unresolved.
    hydra_config = {"alpha": 1e-3, "beta": 1.0, "size": 32, "iterations": 10,
                    "content": {"name": "tubingen"}, "style": {"name": "starry"},
                    "paths": {"images": "${oc.env:NST_IMAGES,null}"}, **(config or {})}
    OmegaConf.save(OmegaConf.create(hydra_config), job / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(overrides), job / ".hydra" / "overrides.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"job": {"num": num}}}),
                   job / ".hydra" / "hydra.yaml")
    if summary is None:  # killed: no record at all
        return job
    record = {**summary, "overrides": overrides}
    if summary.get("status") != "failed":  # past validation: the resolved config
        record["config"] = {**hydra_config, "paths": {"images": "/resolved/images"}}
        Image.new("RGB", (8, 6), (200, 120, 40)).save(job / "result.png")
    (job / "summary.json").write_text(json.dumps(record))
    return job


def make_sweep(sweep: Path, *summaries: dict | None) -> Path:
    """One job per summary, sweeping alpha over 1e-4, 1e-3, ..."""
    for num, summary in enumerate(summaries):
        alpha = f"1e-{4 - num}"
        make_job(sweep, num, [f"alpha={alpha}"], summary, {"alpha": float(alpha)})
    return sweep


def read_table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        reader = csv.DictReader(file)
        # Then the final values, named as the jobs' objective names them.
        header = tuple(reader.fieldnames)
        assert header[:7] == (*TABLE_COLUMNS, "iteration", "seconds")
        assert header[7:] in ((), ("total", "content", "style", "tv"))
        return list(reader)


def end_sweep(sweep: Path) -> int | None:
    """The callback at the end of the multirun; the exit code it asks for, None if none."""
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    try:
        SweepEnd().on_multirun_end(config)
    except SystemExit as end:
        return end.code
    return None


@pytest.fixture
def sweep(tmp_path) -> Path:
    """ok, failed at validation (no config in its summary), interrupted by SIGTERM."""
    return make_sweep(tmp_path / "sweep", OK, FAILED, INTERRUPTED)


def test_sweep_csv_has_one_row_per_job(sweep):
    path = write_sweep_table(sweep, read_sweep(sweep))
    assert path == sweep / "sweep.csv"
    rows = read_table(path)
    assert [(r["job"], r["overrides"], r["status"], r["exit_code"]) for r in rows] == [
        ("0", "alpha=1e-4", "ok", "0"), ("1", "alpha=1e-3", "failed", "2"),
        ("2", "alpha=1e-2", "interrupted", "143")]
    assert [r["reason"] for r in rows] == ["", NEGATIVE, "stopped by SIGTERM"]
    assert {k: rows[0][k] for k in FINAL} == {k: str(v) for k, v in FINAL.items()}
    assert all(rows[1][k] == "" for k in FINAL)  # no step ran
    assert rows[2]["iteration"] == "5"
    assert not list(sweep.glob(".*tmp*"))


def test_a_killed_job_counts_as_failed(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", OK, None)
    rows = read_table(write_sweep_table(sweep, read_sweep(sweep)))
    assert rows[1] == {"job": "1", "overrides": "alpha=1e-3", "status": "failed",
                       "reason": NO_RECORD, "exit_code": "1", **dict.fromkeys(FINAL, "")}


def test_the_figure_marks_failed_and_interrupted_cells(sweep, tmp_path):
    grid = sweep_grid(sweep)
    # The failed job has only Hydra's config (paths unresolved): the axis is still alpha alone.
    assert grid.rows is None and grid.columns.labels == ["1e-4", "1e-3", "1e-2"]
    ok, failed, interrupted = grid.cells[0]
    assert cell_note(failed, 30) == "failed: alpha=-1 is negative;\ngive a weight >= 0 (e.g.\n" \
                                    "alpha=1e-3)"
    assert cell_note(failed, 12).count("\n") == 5 and cell_note(failed, 12).endswith("…")
    assert cell_note(ok, 30) == cell_note(interrupted, 30) == ""
    assert cell_caption(ok) == "content 2e0 · style 1e0"
    assert cell_caption(interrupted) == "content 2e0 · style 1e0 (stopped at 5)"
    assert cell_caption(failed) == ""
    # Drawn: the failed cell framed in red, the interrupted one in orange; a sweep of ok jobs
    # in neither.
    png, pdf = write_sweep_figure(sweep)
    assert figure_size(png) and pdf.suffix == ".pdf"
    assert marked(png, "tab:red") > 100 and marked(png, "tab:orange") > 100
    fine, _ = write_sweep_figure(make_sweep(tmp_path / "fine", OK, OK))
    assert marked(fine, "tab:red") == marked(fine, "tab:orange") == 0


def test_a_config_group_label_ignores_a_failed_jobs_unresolved_paths(tmp_path):
    sweep = tmp_path / "sweep"
    make_job(sweep, 0, ["+panel/fig2=B"], OK, {"alpha": 1e-3})
    make_job(sweep, 1, ["+panel/fig2=C"], FAILED, {"alpha": 8e-4})
    assert sweep_grid(sweep).columns.labels == ["B\nα/β 1e-3", "C\nα/β 8e-4"]


def test_an_old_interrupted_summary_says_where_it_stopped(tmp_path):
    # Before jobs recorded a status, an interrupted run wrote no "final".
    old = {"interrupted": True, "iterations_done": 7}
    job = read_sweep(make_sweep(tmp_path / "sweep", old))[0]
    assert (job.status, job.exit_code) == ("interrupted", 130)
    assert cell_caption(job) == "(stopped at 7)"


def test_nothing_to_draw_is_one_clear_error(tmp_path):
    sweep = make_sweep(tmp_path / "sweep", FAILED, None)
    with pytest.raises(UserError, match=r"nothing to draw in .*\(2 jobs, 2 failed\)"):
        sweep_grid(sweep)


@pytest.mark.parametrize(("summaries", "code", "tally"), [
    ((OK, OK), None, "2 jobs, 2 ok"),
    ((OK, FAILED), 1, "2 jobs, 1 ok, 1 failed"),
    ((OK, DIVERGED), 1, "2 jobs, 1 ok, 1 diverged"),
    ((FAILED, INTERRUPTED, SKIPPED), 143, "3 jobs, 1 failed, 1 interrupted, 1 skipped"),
])
def test_the_multirun_exits_non_zero_unless_every_job_is_ok(summaries, code, tally, tmp_path,
                                                           capsys):
    sweep = make_sweep(tmp_path / "sweep", *summaries)
    assert end_sweep(sweep) == code
    out = capsys.readouterr().out
    assert f"sweep: {tally}; see {sweep / 'sweep.csv'}" in out
    assert f"figure: {sweep / 'figure.png'}" in out
    assert len(read_table(sweep / "sweep.csv")) == len(summaries)


def test_every_job_failed_still_writes_the_table(tmp_path, capsys):
    sweep = make_sweep(tmp_path / "sweep", FAILED)
    assert end_sweep(sweep) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("nst-tf: warning: no figure") and "nothing to draw" in \
        captured.err
    assert read_table(sweep / "sweep.csv")[0]["status"] == "failed"


def test_an_unwritable_table_is_one_line_naming_the_fix(sweep, capsys):
    (sweep / "sweep.csv").mkdir()  # in the way, whoever runs the test
    assert end_sweep(sweep) == 143
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and f"cannot write {sweep / 'sweep.csv'}" in err[0]
    assert "hydra.sweep.dir=" in err[0]
    assert figure_size(sweep / "figure.png")  # the figure is still drawn


# Each kind of value a job's overrides.yaml holds, with Hydra's quoting and escapes.
OVERRIDES = [
    "alpha=1e-3", "beta=+2.5", "size=1_000", "x=.5", "x=1.", "x=-Inf", "x=NaN", "x=info",
    "x=TrUe", "x=false_x", "x=null", "panel/fig2=B", "+terms.mean_colour=1e4", "++a=b", "~video",
    "~video=1", "style_layers=[ conv1_1 , conv2_1 ]", "x=[[1,2],[]]",
    "styles=[{name:starry,weight:0.5},{name: wave, 1: x}]", "content.path=/a b/c.png",
    "content.path='/a b/c.png'", 'x="it\'s \\"so\\""', "x='a\\\\'", "x=a\\,b\\ c\\(",
    "x=${oc.env:HOME}", "x=a : b", "x=1abc", "x=00", "x=a@b?c|d%e*f", "x=  padded  ", "x=",
]


def test_overrides_are_read_as_hydra_reads_them():
    parser = OverridesParser.create()
    hydra = [(o.get_key_element().lstrip("+~"), None if o.is_delete() else o.value())
             for o in parser.parse_overrides(OVERRIDES)]
    # repr: 1 and 1.0, or nan and nan, compare as they should
    assert [repr(parse_override(text)) for text in OVERRIDES] == list(map(repr, hydra))
