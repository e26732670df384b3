"""scripts/bench.py --quick: every section runs and is reported (no timing assertions); and the
report describes the machine it ran on, with nothing in it written for one machine."""

import copy
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark's package, scripts/bench/

from bench import advice, batching, cli, history, machine, report  # noqa: E402

SECTIONS = (
    "environment", "matmul_peak", "numpy_peak", "flops", "step_time", "eager", "memory", "sweep",
    "cli_run", "time_to_quality", "coarse_to_fine", "quality", "determinism", "tuning",
    "preset_check", "batch", "summary", "recommendations",
)
HEADINGS = (
    "# Performance", "## Targets", "## Seconds per iteration", "## Roofline", "## Eager baseline",
    "## Memory", "## Sweep overhead", "## Batching: many runs in one compiled step",
    "## The CLI run", "## Time to quality",
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
    batch = results["batch"]
    assert {(r["size"], r["members"]) for r in batch["throughput"]} == {(32, 1), (32, 2)}
    assert [p["batch"] for p in batch["memory"]["points"]] == [1, 2]
    assert batch["sweep"]["jobs"] == 4  # the quick plan's cut of the Fig. 3 grid
    assert [r["statuses"].get("ok") for r in batch["sweep"]["runs"]
            if not r.get("skipped")] == [4, 4]
    assert len(results["summary"]["targets"]) == 10  # the peer's needs --peer
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


# --- the report on other machines, from recorded results (no measuring, no TensorFlow) ---

# One full run's performance.json (an AVX-512 EPYC with bf16 and no AMX, 23.5 GiB), its long
# curves thinned: the tests' own copy, so that a new docs/performance.json changes no test.
RECORDED = Path(__file__).parent / "data" / "bench_results.json"
# Earlier machines as docs/performance_history.json lists them: AVX2 only, and AVX-512 with bf16.
HISTORY = [
    {"cpu": "AMD EPYC, family 25 (Zen 3)", "isa": ["avx", "fma", "avx2"], "cores": None,
     "memory_gib": None, "date": None, "tensorflow": None, "source": "an issue", "size": 512,
     "fp32_seconds": 5.1, "bf16_seconds": 87.5, "fp32_gflops": 79, "tf_fp32_peak_gflops": 91,
     "numpy_fp32_peak_gflops": 131, "note": "AVX2 only"},
    {"cpu": "AMD EPYC", "isa": ["avx2", "avx512f", "avx512_bf16"], "cores": 2,
     "memory_gib": 23.5, "date": "2026-11-29T12:48:02", "tensorflow": "2.21.0",
     "source": "a snapshot", "size": 512, "fp32_seconds": 0.9816, "bf16_seconds": 0.5416,
     "fp32_gflops": 413.7, "tf_fp32_peak_gflops": 477.1, "numpy_fp32_peak_gflops": None,
     "note": "avx512_bf16, no AMX"},
]


@pytest.fixture
def measured():
    return json.loads(RECORDED.read_text())


def as_machine(results, cpu, isa, bf16_factor):
    """The recorded results as if measured on another CPU whose bf16 step takes
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
    # NumPy's 700 GFLOP/s beats TensorFlow's: the target is measured against NumPy's
    assert measured["matmul_peak"]["fp32"]["gflops"] < 700
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
    speedup = 71.0 / 40.0  # the peer's 71 s against our 40 s to its loss
    assert f"| ours, bf16 | 0.120 | 341, 40.0 s | {speedup:.2f}× |" in text
    assert "in its own precision at iteration 338 (39.6 s)" in text
    assert "scores its image 7.52e+06" in text
    target = next(t for t in results["summary"]["targets"] if "PyTorch" in t["target"])
    assert (target["measured"], target["met"]) == (f"{speedup:.2f}x", True)
    ours[1]["reached"] = None
    text = render(results)
    assert "| ours, bf16 | 0.120 | not within 450 | — |" in text
    target = next(t for t in results["summary"]["targets"] if "PyTorch" in t["target"])
    assert (target["measured"], target["met"]) == ("not reached", False)


def test_history_table_and_append(measured, tmp_path):
    results = as_machine(measured, "Test CPU", ["avx", "avx2"], 2.0)
    results["plan"]["name"] = "full"
    text = render(results, HISTORY)
    assert "Zen 3" in text and "**this run**" in text
    ratios = [m["fp32_seconds"] / m["bf16_seconds"] for m in HISTORY]  # bf16's speed-ups
    assert f"range from {min(ratios):.2f} to {max(ratios):.2f}" in text
    path = tmp_path / "history.json"
    history.append(path, history.headline(results))
    history.append(path, history.headline(results))  # the same run is kept once
    assert [m["cpu"] for m in history.load(path)] == ["Test CPU (GenuineTest family 6)"]


def test_a_full_run_adds_itself_to_the_history_beside_its_report(measured, tmp_path):
    results = as_machine(measured, "Test CPU", ["avx", "avx2"], 2.0)
    results["environment"]["date"] = "2030-01-01T00:00:00"  # another run than the committed one
    docs, out = tmp_path / "docs", tmp_path / "out"
    docs.mkdir()
    out.mkdir()
    committed = docs / "performance_history.json"
    history.append(committed, history.headline(measured))
    before = committed.read_bytes()
    written = history.record(out, committed, history.headline(results))
    assert written == out / "performance_history.json" and committed.read_bytes() == before
    assert len(history.load(written)) == 2
    history.record(docs, committed, history.headline(results))  # --out docs: the file itself
    assert len(history.load(committed)) == 2


def test_default_out_is_a_new_folder_under_outputs_not_docs():
    # The benchmark's report must not replace the committed docs unless asked (--out docs).
    out = cli.parse_args([]).out
    assert out.is_relative_to(ROOT / "outputs") and not out.is_relative_to(ROOT / "docs")
    assert not out.exists()
    assert cli.parse_args(["--quick"]).out.parent == out.parent
    assert cli.parse_args(["--out", "docs"]).out == Path("docs")


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


# --- the batch section's report and targets, from recorded (fake) results ---


def fake_batch(ratio_256_b4=1.31, sweep_ok=20, batch20_fits=True, gpus=()):
    """A batch section as `batching.section_batch` records it, with chosen outcomes."""
    rows = []
    for precision in ("fp32", "bf16"):
        for size in (128, 256, 512):
            for members in (1, 2, 4, 8):
                if (size, members, precision) == (512, 8, "fp32"):
                    rows.append({"size": size, "precision": precision, "members": members,
                                 "skipped": "needs about 30.0 GiB by the memory model, "
                                            "20.0 GiB available"})
                    continue
                ratio = {1: 1.0, 2: 1.1, 4: ratio_256_b4 if size == 256 else 1.2, 8: 1.3}[members]
                seconds = members * 0.25 / ratio
                rows.append({"size": size, "precision": precision, "members": members,
                             "seconds_per_iteration": seconds, "min_seconds": seconds,
                             "times": [seconds], "compile_seconds": 2.0,
                             "images_per_second": members / seconds,
                             "ratio": ratio if precision == "bf16" else ratio - 0.05,
                             "gflops": 400.0})
    runs = [{"name": "sequential", "command": "python scripts/run.py -m +experiment=fig3",
             "wall_seconds": 300.0, "exit_code": 0, "statuses": {"ok": 20},
             "batches": [1] * 20, "precision": "bf16"},
            {"name": "batched auto", "command": "python scripts/run.py -m +experiment=fig3 "
             "hydra/launcher=nst_batched", "wall_seconds": 150.0,
             "exit_code": 0 if sweep_ok == 20 else 1,
             "statuses": {"ok": sweep_ok, **({"failed": 20 - sweep_ok} if sweep_ok < 20 else {})},
             "batches": [16, 4], "precision": "bf16"}]
    runs.append({"name": "batched 20", "command": "python scripts/run.py -m +experiment=fig3 "
                 "hydra/launcher=nst_batched hydra.launcher.batch_size=20", "wall_seconds": 140.0,
                 "exit_code": 0, "statuses": {"ok": 20}, "batches": [20], "precision": "bf16"}
                if batch20_fits else {"name": "batched 20", "skipped": True})
    mib = 2**20
    return {
        "device": {"tensorflow_device": "GPU Test 100" if gpus else "CPU Test CPU",
                   "gpus": [{"name": g, "compute_capability": [8, 0]} for g in gpus]},
        "placed_on": "/job:localhost/replica:0/task:0/device:CPU:0",
        "auto_precision": {"requested": "auto", "used": "bf16", "bf16_speedup": 1.56,
                           "decided": "cached"},
        "precisions": ["fp32", "bf16"], "auto_cap": 16, "throughput": rows,
        "repeats": {"128": 10, "256": 6, "512": 3},
        "memory": {"size": 256, "precision": "fp32", "steps": 2, "optimizer": "lbfgs",
                   "history_size": 50, "available_bytes": 20 * 2**30,
                   "points": [{"batch": b, "peak_rss": (1000 + 220 * b) * mib,
                               "model_rss": 900 * mib} for b in (1, 2, 4, 8)],
                   "bytes_per_member": 220 * mib, "intercept_bytes": 1000 * mib,
                   "estimate_bytes_per_member": 229376000.0,
                   "choices": [{"size": 256, "content": [256, 192], "style_pixels": 52000,
                                "auto": 16, "fits_measured": 83,
                                "measured_member_bytes": 165 * mib,
                                "estimate_member_bytes": 164 * mib},
                               {"size": 512, "content": [512, 384], "style_pixels": 208000,
                                "auto": 16, "fits_measured": 20,
                                "measured_member_bytes": 660 * mib,
                                "estimate_member_bytes": 656 * mib}]},
        "sweep": {"jobs": 20, "size": 128, "iterations": 50, "content": [128, 96],
                  "auto_expected": 16, "runs": runs,
                  "batch20": {"fits": batch20_fits, "estimate_bytes": 3.5 * 2**30 if
                              batch20_fits else 40 * 2**30, "available_bytes": 20 * 2**30}},
        "gpu_estimate": {"assumed": batching.GPU_ASSUMED, "tile": 128,
                         "sizes": [{"size": 256, "flops": 102e9, "layer": "conv5_1",
                                    "positions": 256, "channels": 512},
                                   {"size": 512, "flops": 406e9, "layer": "conv5_1",
                                    "positions": 1024, "channels": 512}]},
    }


def batch_targets(results):
    return [t for t in results["summary"]["targets"]
            if t["target"].startswith(("B = ", "the Fig. 3 grid"))]


def test_batch_section_targets_and_report(measured):
    results = copy.deepcopy(measured)
    results.pop("batch", None)
    assert "`python scripts/bench.py --only batch` measures it alone" in render(results)
    assert batch_targets(results) == []

    results["batch"] = fake_batch()
    results["environment"].update(cpu="Test CPU 3000", cpu_details={"vendor": "GenuineTest"})
    text = render(results)
    speed, sweep = batch_targets(results)
    runs = {run["name"]: run["wall_seconds"] for run in results["batch"]["sweep"]["runs"]}
    assert speed["target"].startswith("B = 4 at 256 px, bf16 (precision=auto here): >= 1.25x")
    assert (speed["measured"], speed["met"]) == ("1.31x; fp32 1.26x", True)
    sequential, auto, twenty = runs["sequential"], runs["batched auto"], runs["batched 20"]
    assert sweep["measured"] == (f"{sequential / auto:.2f}x ({sequential:.0f} s → {auto:.0f} s); "
                                 f"batch_size=20: {sequential / twenty:.2f}x; "
                                 "ok jobs 20/20, 20/20, 20/20")
    assert sweep["met"] is True
    seconds = 4 * 0.25 / 1.31  # B = 4 at 0.25 s per member, 1.31x as fast as one at a time
    assert f"| 256 | bf16 | 4 | {seconds:.3f} | {4 / seconds:.2f} | 1.31 | 400 | 2.0 |" in text
    assert "| 512 | fp32 | 8 | skipped: needs about 30.0 GiB" in text
    assert "| batched auto | `python scripts/run.py -m +experiment=fig3 hydra/launcher=" \
           "nst_batched` | 16 + 4 | bf16 | 150.0 | 20/20 | 2.00× |" in text
    assert "| sequential |" in text and "| 20 × 1 |" in text
    memory, mib = results["batch"]["memory"], 2**20
    assert "b = **220 MiB per member**" in text
    assert f"{220 * mib / memory['estimate_bytes_per_member']:.2f}× the estimate" in text
    choice = memory["choices"][1]
    assert (f"| 512 | 512×384 | 16 | 20 | {choice['measured_member_bytes'] // mib} / "
            f"{choice['estimate_member_bytes'] // mib} |") in text
    # the device it ran on, and the GPU paragraph only as an estimate
    assert "TensorFlow ran the step on **CPU Test CPU**" in text
    assert "Test CPU 3000 (GenuineTest)" in text and "GPUs TensorFlow can use: none" in text
    gpu = text.split("### On a GPU: an ESTIMATE, not measured")[1]
    assert "No GPU ran here: nothing below is measured. **ESTIMATE.**" in gpu
    assert "A100" in gpu and "0.33 ms (bf16)" in gpu and "about B = 14" in gpu

    # missed: a slow batch at 256 px; a batched sweep with a failed job; 20 did not fit
    results["batch"] = fake_batch(ratio_256_b4=1.1, sweep_ok=19, batch20_fits=False,
                                  gpus=("Test GPU",))
    text = render(results)
    speed, sweep = batch_targets(results)
    assert (speed["measured"], speed["met"]) == ("1.10x; fp32 1.05x", False)
    assert sweep["met"] is False and "ok jobs 20/20, 19/20" in sweep["measured"]
    assert "batch_size=20: 2" not in sweep["measured"]
    assert "`batch_size=20`: **not run**" in text and "40.0 GiB, does not fit" in text
    assert "The batched auto sweep exited with 1: 19 ok, 1 failed." in text
    assert "- Missed: B = 4 at 256 px" in text
    assert "GPUs TensorFlow can use: Test GPU (compute capability 8.0)" in text
    assert "the paragraph below is still only the estimate" in text


def test_batch_section_alone_is_written_and_rendered_again(measured, tmp_path, capsys):
    quick = report.Plan.from_dict({**measured["plan"], "name": "quick"})
    results = {"only": "batch", "plan": dataclasses.asdict(quick),
               "environment": {**measured["environment"], "loadavg_end": 0.1},
               "total_seconds": 90.0, "batch": fake_batch()}
    batching.write_alone(results, tmp_path)
    text = (tmp_path / "PERFORMANCE.md").read_text()
    assert "`python scripts/bench.py --only batch --quick` (QUICK run" in text
    assert "| B = 4 at 256 px, bf16 (precision=auto here)" in text
    assert "## Batching: many runs in one compiled step" in text
    cli.main(["--render", "--out", str(tmp_path)])
    assert capsys.readouterr().out.startswith("batch: 1.31x; fp32 1.26x (met); 2.00x")
    assert cli.parse_args(["--only", "batch", "--quick"]).only == "batch"
