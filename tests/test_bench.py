"""scripts/bench.py --quick: every section runs and is reported (no timing assertions)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SECTIONS = (
    "environment", "matmul_peak", "flops", "step_time", "eager", "memory", "sweep", "cli_run",
    "time_to_quality", "quality", "determinism", "tuning", "preset_check", "summary",
    "recommendations",
)
HEADINGS = (
    "# Performance", "## Targets", "## Seconds per iteration", "## Roofline", "## Eager baseline",
    "## Memory", "## Sweep overhead", "## The CLI run", "## Time to quality",
    "## fp32 and bf16: quality", "## Optimiser presets",
)
FIGURES = ("perf_fp32_bf16.jpg", "perf_bf16_512.jpg", "perf_lbfgs_vs_adam.jpg",
           "perf_time_to_quality.jpg")


@pytest.fixture(scope="module")
def quick(tmp_path_factory, images_dir):
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=900, check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out, done.stdout


def test_json_has_every_section(quick):
    out, _ = quick
    results = json.loads((out / "performance.json").read_text())
    assert set(SECTIONS) <= set(results)
    rows = results["step_time"]
    for precision in ("fp32", "bf16"):
        assert {r["size"] for r in rows if r["precision"] == precision} == {32, 48, 64}
        assert any(r["jit_compile"] for r in rows if r["precision"] == precision)
        assert results["matmul_peak"][precision]["gflops"] > 0
        assert results["memory"]["fits"][precision]["bytes_per_pixel"] is not None
        assert isinstance(results["determinism"][precision], bool)
    assert all(r["gflops"] > 0 and r["seconds_per_iteration"] > 0 for r in rows)
    assert results["flops"]["deepest_layer"] == "conv5_1"
    assert {r["precision"] for r in results["eager"]} == {"fp32", "bf16"}
    sweep = results["sweep"]
    assert len(sweep["jobs"]) == 2 and 0 <= sweep["overhead_share"] < 1
    assert set(sweep["breakdown"]) == {
        "startup", "compile", "job_setup_and_output", "between_jobs", "exit"}
    assert results["cli_run"]["wall_seconds"] > results["cli_run"]["loop_seconds"] > 0
    for name in ("lbfgs", "adam"):
        assert "iterations" in results["time_to_quality"][name]
    assert set(results["quality"]["relative_gap"]) == {"content", "style"}
    labels = [r["label"] for r in results["tuning"]["runs"]]
    assert any("strong_wolfe" in label for label in labels)
    assert any(label.startswith("adam") for label in labels)
    assert len(results["summary"]["targets"]) == 7


def test_markdown_and_figures(quick):
    out, stdout = quick
    report = (out / "PERFORMANCE.md").read_text()
    for heading in HEADINGS:
        assert f"\n{heading}" in f"\n{report}", heading
    assert "QUICK run" in report
    for figure in FIGURES:
        assert figure in report
        assert 0 < (out / figure).stat().st_size <= 300_000
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and "s/it" in lines[0]
