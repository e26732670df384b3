"""scripts/bench.py --quick: every section runs and is reported (no timing assertions); and the
report describes the machine it ran on, with nothing in it written for one machine."""

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark's package, scripts/bench/

from bench import advice, history, machine, report  # noqa: E402

SECTIONS = (
    "environment", "matmul_peak", "numpy_peak", "flops", "step_time", "eager", "memory", "sweep",
    "cli_run", "time_to_quality", "coarse_to_fine", "quality", "determinism", "tuning",
    "preset_check", "summary", "recommendations",
)
HEADINGS = (
    "# Performance", "## Targets", "## Seconds per iteration", "## Roofline", "## Eager baseline",
    "## Memory", "## Sweep overhead", "## The CLI run", "## Time to quality",
    "## Coarse to fine", "## fp32 and bf16: quality", "## Optimiser presets",
    "## Other machines",
)
FIGURES = ("perf_fp32_bf16.jpg", "perf_cli_run.jpg", "perf_lbfgs_vs_adam.jpg",
           "perf_time_to_quality.jpg", "perf_coarse_to_fine.jpg")


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
    numpy = results["numpy_peak"]
    assert numpy["gflops"] > 0 and set(numpy["forms"]) == {"matmul 256", "matmul 512"}
    assert numpy["blas"]["via"] in ("threadpoolctl", "numpy.show_config")
    env = results["environment"]
    assert env["cpu"] and env["cores"] >= 1 and env["memory_bytes"] > 0 and env["tensorflow"]
    assert isinstance(env["isa"], list) and "loadavg_start_1_5_15" in env
    assert results["flops"]["deepest_layer"] == "conv5_1"
    assert {r["precision"] for r in results["eager"]} == {"fp32", "bf16"}
    sweep = results["sweep"]
    assert len(sweep["jobs"]) == 2 and 0 <= sweep["overhead_share"] < 1
    assert set(sweep["breakdown"]) == {
        "startup", "compile", "job_setup_and_output", "between_jobs", "exit"}
    assert results["cli_run"]["wall_seconds"] > results["cli_run"]["loop_seconds"] > 0
    assert results["cli_run"]["precision"] == results["summary"]["faster_precision"]
    for name in ("lbfgs", "adam"):
        assert "iterations" in results["time_to_quality"][name]
    c2f = results["coarse_to_fine"]
    assert c2f["scales"] == [32, 64] and c2f["direct"]["reached"] is not None
    assert c2f["coarse_to_fine"]["full_size_from"]["iteration"] == 5  # scale_iterations=[5,10]
    assert set(results["quality"]["relative_gap"]) == {"content", "style"}
    labels = [r["label"] for r in results["tuning"]["runs"]]
    assert any("strong_wolfe" in label for label in labels)
    assert any(label.startswith("adam") for label in labels)
    assert len(results["summary"]["targets"]) == 8  # the peer's needs --peer
    assert any("precision=auto" in r for r in results["recommendations"])


def test_markdown_and_figures(quick):
    out, stdout = quick
    report_text = (out / "PERFORMANCE.md").read_text()
    for heading in HEADINGS:
        assert f"\n{heading}" in f"\n{report_text}", heading
    assert "QUICK run" in report_text and "Another machine gives other numbers" in report_text
    for figure in FIGURES:
        assert figure in report_text
        assert 0 < (out / figure).stat().st_size <= 300_000
    lines = stdout.strip().splitlines()
    assert len(lines) == 1 and "s/it" in lines[0]


# --- the report on other machines, from the committed results (no measuring, no TensorFlow) ---


@pytest.fixture
def measured():
    return json.loads((ROOT / "docs" / "performance.json").read_text())


def as_machine(results, cpu, isa, bf16_factor):
    """The committed results as if measured on another CPU whose bf16 step takes
    `bf16_factor` times fp32's."""
    results = copy.deepcopy(results)
    env = results["environment"]
    env.update(cpu=cpu, isa=isa, cpu_details={"vendor": "GenuineTest", "family": "6"})
    env["bf16_instructions"] = [f for f in isa if "bf16" in f or f.startswith("amx")]
    for row in results["step_time"]:
        if row["precision"] == "bf16":
            fp32 = advice.step_row(results["step_time"], row["size"], "fp32", row["jit_compile"])
            row["seconds_per_iteration"] = fp32["seconds_per_iteration"] * bf16_factor
            row["gflops"] = fp32["gflops"] / bf16_factor
    results["matmul_peak"]["bf16"]["gflops"] = (
        results["matmul_peak"]["fp32"]["gflops"] / bf16_factor)
    results["numpy_peak"] = {"gflops": 700.0, "best_form": "matmul 2048", "numpy": "2.0",
                             "forms": {"matmul 2048": 700.0}, "blas": {}}
    return results


def render(results, machines=()):
    results["summary"] = advice.summarise(results, report.Plan.from_dict(results["plan"]))
    results["recommendations"] = advice.recommend(results, machines)
    return report.render_markdown(results, machines)


def test_report_follows_the_machine(measured):
    slow_bf16 = render(as_machine(measured, "Test CPU 3000", ["sse4_2", "avx", "fma", "avx2"],
                                  17.0))
    assert "Test CPU 3000" in slow_bf16 and "GenuineTest family 6" in slow_bf16
    for word in ("EPYC", "avx512_bf16", "with AMX", "24 GiB"):
        assert word not in slow_bf16, word
    assert "no bf16 instructions" in slow_bf16 and "17.0× slower than fp32" in slow_bf16
    assert "auto picks fp32 here" in slow_bf16
    # NumPy's 700 GFLOP/s beats TensorFlow's 477: the target is measured against NumPy's
    assert "NumPy's GEMM beats TensorFlow's fp32 GEMM" in slow_bf16
    amx = render(as_machine(measured, "Test CPU 9000",
                            ["avx", "avx2", "avx512f", "amx_tile", "amx_bf16"], 0.25))
    assert "amx_bf16" in amx and "4.00× faster than fp32" in amx and "auto picks bf16" in amx


def test_precision_advice_is_never_bf16_alone(measured):
    for factor in (0.25, 0.55, 1.0, 17.0):
        results = as_machine(measured, "Test CPU", ["avx", "avx2"], factor)
        render(results)
        precision = results["recommendations"][0]
        assert precision.startswith("**Precision: `precision=auto`**")
        assert f"speed ratio of {1 / factor:.2f}" in precision


def test_peer_section_and_target(measured):
    results = copy.deepcopy(measured)
    results.pop("peer", None)
    assert "Not measured in this run: `python scripts/bench.py --peer" in render(results)
    ours = [{"precision": "fp32", "seconds_per_iteration": 0.25, "total": [9.0] * 451,
             "reached": {"iteration": 354, "seconds": 72.0, "speedup": 71.0 / 72.0}},
            {"precision": "bf16", "seconds_per_iteration": 0.12, "total": [9.0] * 451,
             "reached": {"iteration": 341, "seconds": 40.0, "speedup": 71.0 / 40.0},
             "own_crossing": {"iteration": 338, "seconds": 39.6, "fp32_total": 7.52e6}}]
    results["peer"] = {"size": 256, "width": 256, "height": 192, "iterations": 300,
                       "bar": 7.51e6, "torch": "2.13.0", "ours": ours,
                       "peer": {"seconds": [0.0, 71.0], "total": [9.0, 7.51e6],
                                "seconds_per_iteration": 0.237}}
    text = render(results)
    assert "| ours, bf16 | 0.120 | 341, 40.0 s | 1.77× |" in text
    assert "in its own precision at iteration 338 (39.6 s)" in text
    assert "scores its image 7.52e+06" in text
    target = next(t for t in results["summary"]["targets"] if "PyTorch" in t["target"])
    assert (target["measured"], target["met"]) == ("1.77x", True)
    ours[1]["reached"] = None
    text = render(results)
    assert "| ours, bf16 | 0.120 | not within 450 | — |" in text
    target = next(t for t in results["summary"]["targets"] if "PyTorch" in t["target"])
    assert (target["measured"], target["met"]) == ("not reached", False)


def test_history_table_and_append(measured, tmp_path):
    committed = history.load(ROOT / "docs" / "performance_history.json")
    assert {"Zen 3" in m["cpu"] for m in committed} == {True, False}
    results = as_machine(measured, "Test CPU", ["avx", "avx2"], 2.0)
    results["plan"]["name"] = "full"
    text = render(results, committed)
    assert "Zen 3" in text and "**this run**" in text
    assert "range from 0.06 to" in text  # the earlier machines' bf16/fp32 ratios
    path = tmp_path / "history.json"
    history.append(path, history.headline(results))
    history.append(path, history.headline(results))  # the same run is kept once
    assert [m["cpu"] for m in history.load(path)] == ["Test CPU (GenuineTest family 6)"]


def test_cpuinfo_and_lscpu_parsing():
    cpuinfo = ("processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
               "model name\t: AMD EPYC 7B13\nphysical id\t: 0\ncore id\t\t: 0\n"
               "flags\t\t: fpu sse4_2 avx fma avx2 hypervisor\n\n"
               "processor\t: 1\nphysical id\t: 0\ncore id\t\t: 0\nflags\t\t: fpu\n")
    cpu = machine.parse_cpuinfo(cpuinfo)
    assert (cpu["model"], cpu["family"], cpu["logical"], cpu["physical"]) == (
        "AMD EPYC 7B13", "25", 2, 1)
    lscpu = machine.parse_lscpu("Model name: Xeon\nCPU(s): 8\nSocket(s): 1\n"
                                "Core(s) per socket: 4\nFlags: avx2 amx_tile amx_bf16\n")
    assert (lscpu["model"], lscpu["logical"], lscpu["physical"]) == ("Xeon", 8, 4)
    assert machine.isa_summary(["avx", "fma", "avx2"]) == "AVX2; no AMX, no bf16 instructions"
    assert machine.isa_summary(["avx", "avx2", "avx512f", "amx_tile", "amx_bf16"]) == (
        "AVX2, AVX-512, amx_tile, amx_bf16")
    described = machine.describe_cpu()
    assert described["model"] and isinstance(described["isa"], list)
