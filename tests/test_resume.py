"""resume=<run dir> continues a run from its last snapshot, and its loss curve with it."""

import json

import pytest

from tests.helpers import FAST, cli_outcome, read_csv, run_here

# In this process (compose.attempt, as the app runs its job); resume= on the command line is
# run in subprocesses by tests/test_reliability.py, test_scales.py and test_video.py.


@pytest.fixture(scope="module")
def earlier(tmp_path_factory, images_dir):
    out = tmp_path_factory.mktemp("resume") / "earlier"
    summary = run_here(out, "size=48", "iterations=20", "save_every=10", "alpha=1e-2", *FAST)
    assert summary["status"] == "ok", summary["reason"]
    return out


def test_resume_continues_the_loss_curve(earlier, tmp_path):
    out = tmp_path / "resumed"
    summary = run_here(out, f"resume={earlier}", "iterations=40", "progress=false")
    assert summary["status"] == "ok", summary["reason"]
    old, new = read_csv(earlier / "losses.csv"), read_csv(out / "losses.csv")
    assert [r["iteration"] for r in new] == list(range(41))
    assert new[:20] == old[:20]  # the earlier curve, as it was
    # Row 20 is re-measured on the 8-bit snapshot: close to where the earlier run stood,
    # far below where it started.
    assert new[20]["style"] == pytest.approx(old[20]["style"], rel=0.2)
    assert new[20]["style"] < 0.5 * old[0]["style"]
    assert new[-1]["style"] < new[20]["style"]
    assert new[20]["seconds"] >= old[19]["seconds"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed_from"].endswith("iter_00020.png")
    assert summary["config"]["size"] == 48 and summary["config"]["alpha"] == 0.01
    assert sorted(p.name for p in (out / "snapshots").iterdir()) == [
        "iter_00030.png", "iter_00040.png"]


@pytest.mark.parametrize("args, expected", [
    (["resume={tmp}"], "has no snapshot"),
    (["resume={earlier}", "alpha=3"], "alpha cannot change"),
    (["resume={earlier}", "iterations=20"], "already ran 20 iterations"),
])
def test_bad_resume_gives_one_line(args, expected, earlier, tmp_path):
    args = [a.format(tmp=tmp_path, earlier=earlier) for a in args]
    code, line = cli_outcome(tmp_path / "out", *args)
    assert code == 2 and "\n" not in line and expected in line, line
