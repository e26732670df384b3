"""The benchmark's own parts (scripts/bench/): the ratios and the targets' pass or fail on
injected numbers, the report rendered from injected data, and one real step timed at 32 px.
The benchmark itself (`python scripts/bench.py --quick`) is not run here: it takes minutes."""

import json
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))  # the benchmark's package, scripts/bench/

from bench import checks, cli, report  # noqa: E402
from bench.bench_step import timed_step  # noqa: E402
from bench.harness import Builder, vgg_flops  # noqa: E402


def bench(group: str, median: float, **extra) -> dict:
    """One benchmark as pytest-benchmark's JSON holds it."""
    case = "-".join(str(value) for key, value in extra.items() if key in ("size", "precision",
                                                                          "n", "launcher"))
    return {"group": group, "name": f"test_{group}", "fullname": f"bench.py::test_{group}[{case}]",
            "stats": {"median": median, "min": median}, "extra_info": extra}


def run(*benchmarks: dict, plan: str = "full") -> dict:
    """A run's JSON: these benchmarks on an invented machine."""
    return {"machine_info": {"plan": plan, "python_version": "3.11", "system": "Linux",
                             "release": "6", "tensorflow": "2.99", "usable_cores": 3,
                             "loadavg_start": [0.1, 0.2, 0.3], "loadavg_end": [0.4, 0.5, 0.6],
                             "cpu": {"brand_raw": "Invented CPU 9000", "family": 7, "model": 42,
                                     "count": 3, "flags": ["avx2", "fma", "amx_bf16"]}},
            "commit_info": {"id": "0123456789abcdef", "dirty": False},
            "datetime": "2031-01-02T03:04:05", "benchmarks": list(benchmarks)}


def gemm(gflops: float) -> dict:
    return bench("gemm", 2.0 * 1024**3 / (gflops * 1e9), n=1024, flops=2.0 * 1024**3,
                 blas="openblas 0.3")


def step(size: int, precision: str, gflops: float) -> dict:
    return bench("step", 400e9 / (gflops * 1e9), size=size, precision=precision, flops=400e9)


def by_target(data: dict, words: str) -> checks.Check:
    [found] = [c for c in checks.checks(data) if words in c.target]
    return found


@pytest.mark.parametrize(("step_gflops", "passed"), [(160.0, True), (159.0, False)])
def test_the_roofline_target_is_the_fp32_step_against_numpys_peak(step_gflops, passed):
    data = run(gemm(150.0), gemm(200.0), step(512, "fp32", step_gflops),
               step(512, "bf16", 400.0), step(256, "fp32", 10.0))
    assert checks.gemm_peak(data) == pytest.approx(200.0)
    found = by_target(data, "GEMM peak")
    assert found.measured == pytest.approx(step_gflops / 200.0)
    assert found.passed is passed
    rows = {(r["size"], r["precision"]): r for r in checks.step_rows(data)}
    assert rows[256, "fp32"]["of NumPy's GEMM peak"] == pytest.approx(0.05)


def picture(today_seconds: float, default_seconds: float, today_total: float,
            default_total: float, size: int = 256) -> dict:
    return bench("picture", default_seconds, size=size, today_seconds=today_seconds,
                 default_seconds=default_seconds, today_total=today_total,
                 default_total=default_total, today_iterations=500, default_iterations=150,
                 today_image="gone.png", default_image="gone.png",
                 mean_abs_pixel_difference=3.5)


def test_the_picture_targets_are_the_wall_time_ratio_and_the_loss_gap():
    fast_and_close = run(picture(300.0, 90.0, 1.00e7, 1.015e7))
    assert by_target(fast_and_close, "less wall time").measured == pytest.approx(300 / 90)
    assert by_target(fast_and_close, "less wall time").passed
    assert by_target(fast_and_close, "final total loss").measured == pytest.approx(0.015)
    assert by_target(fast_and_close, "final total loss").passed
    slow_and_worse = run(picture(300.0, 110.0, 1.00e7, 1.03e7))
    assert by_target(slow_and_worse, "less wall time").passed is False
    assert by_target(slow_and_worse, "final total loss").passed is False


def peer(precision: str, reached: float | None) -> dict:
    return bench("peer", 60.0, precision=precision, bar=7.5e6, torch="2.0", peer_seconds=70.0,
                 peer_iterations=300, reached_iteration=None if reached is None else 250,
                 reached_seconds=reached, seconds=[0.0, 1.0], total=[9e6, 7e6],
                 peer_curve=[[0.0, 1.0], [9e6, 7.5e6]])


def test_the_peer_targets_are_1_5x_in_fp32_and_2x_in_bf16():
    data = run(peer("fp32", 40.0), peer("bf16", 40.0))
    fp32, bf16 = by_target(data, "fp32: reached"), by_target(data, "bf16: reached")
    assert fp32.measured == bf16.measured == pytest.approx(70 / 40)
    assert (fp32.bar, bf16.bar) == (1.5, 2.0)
    assert fp32.passed and bf16.passed is False
    never = by_target(run(peer("fp32", None)), "fp32: reached")
    assert never.measured is None and never.passed is None


def sweep(plain: float, batched: float, largest: int) -> list[dict]:
    """Two rounds each, the median the one given."""
    return [bench("sweep", 2 * (plain + batched), jobs=4, largest_batch=largest,
                  walls={"plain": [plain - 1, plain + 1], "nst_batched": [batched + 2,
                                                                         batched - 2]},
                  commands={"plain": "run.py -m", "nst_batched": "run.py -m nst_batched"})]


@pytest.mark.parametrize(("batched", "largest", "bar", "passed"), [
    (39.0, 1, 1.0, False), (35.0, 1, 1.0, True), (30.0, 4, 1.25, False), (28.0, 4, 1.25, True)])
def test_batching_is_never_slower_and_1_25x_where_the_probe_batches(batched, largest, bar,
                                                                    passed):
    found = by_target(run(*sweep(36.0, batched, largest)), "nst_batched")
    assert found.measured == pytest.approx(36.0 / batched)
    assert found.bar == bar and found.passed is passed


def test_batch_and_style_rows_are_relative_to_one_image_and_to_gram():
    data = run(*(bench("batch", seconds, size=256, batch=members, precision="bf16", flops=1.0)
                 for members, seconds in ((1, 1.0), (4, 2.5))),
               *(bench("style terms", seconds, size=size, style_loss=name, flops=1.0)
                 for size, name, seconds in ((256, "gram", 0.2), (256, "mrf", 0.5),
                                             (512, "gram", 1.0), (512, "mrf", 1.5))))
    batch = {r["batch"]: r for r in checks.batch_rows(data)}
    assert batch[4]["images·it/s"] == pytest.approx(1.6)
    assert batch[4]["× B = 1"] == pytest.approx(1.6) and batch[1]["× B = 1"] == 1.0
    style = {(r["size"], r["style_loss"]): r["× gram's time"] for r in checks.style_rows(data)}
    assert style == pytest.approx({(256, "gram"): 1.0, (256, "mrf"): 2.5, (512, "gram"): 1.0,
                                   (512, "mrf"): 1.5})
    assert checks.headline(data)["batch4_256"] == pytest.approx(1.6)


def test_the_report_shows_what_it_was_given():
    data = run(gemm(200.0), step(512, "fp32", 170.0), step(512, "bf16", 320.0),
               picture(300.0, 90.0, 1.00e7, 1.015e7), peer("bf16", 40.0),
               *sweep(36.0, 28.0, 4))
    earlier = {"cpu": "Older CPU 1000", "size": 512, "fp32_seconds": 5.1, "note": "by hand"}
    text = report.render(data, [earlier], [])
    assert "Invented CPU 9000" in text and "family 7 model 42" in text and "amx_bf16" in text
    [row] = [line for line in text.splitlines() if "Older CPU 1000" in line]
    assert "5.1" in [cell.strip() for cell in row.split("|")]  # its own cell, not "15.1"
    assert "85%" in text  # 170 of 200 GFLOP/s
    assert f"{300 / 90:.2f}" in text and f"{70 / 40:.2f}" in text
    verdicts = [line for line in text.splitlines() if line.startswith("| ")]
    assert sum("**fail**" in line for line in verdicts) == 1  # bf16: 1.75 against 2
    assert "QUICK" not in text and "QUICK" in report.render(run(plan="quick"), [], [])


def test_render_again_from_a_runs_json(tmp_path, capsys):
    data = run(gemm(200.0), step(512, "fp32", 170.0), peer("fp32", 35.0))
    (tmp_path / "benchmark.json").write_text(json.dumps(data))
    history = tmp_path / "history.json"
    history.write_text(json.dumps({"machines": [{"cpu": "Older CPU 1000", "size": 512}]}))
    cli.main(["--render", "--out", str(tmp_path), "--history", str(history)])
    text = (tmp_path / "PERFORMANCE.md").read_text()
    assert "Older CPU 1000" in text and "perf_peer.jpg" in text
    with Image.open(tmp_path / "perf_peer.jpg") as figure:
        figure.load()  # decoded whole
        assert min(figure.size) > 100
    assert "2 passed" in capsys.readouterr().out  # the roofline and the peer's
    assert not (tmp_path / "performance_history.json").exists()  # a re-render adds nothing
    with pytest.raises(SystemExit):
        cli.parse_args(["--render"])  # which run? --out names it


def test_a_merged_run_keeps_only_what_it_did_not_measure_again(tmp_path):
    earlier = run(gemm(100.0), step(512, "fp32", 50.0), picture(300.0, 90.0, 1e7, 1e7),
                  *sweep(36.0, 28.0, 4))
    earlier["machine_info"]["keyword"] = "gemm or step or picture or sweep"
    earlier["datetime"] = "2031-01-01T00:00:00"
    now = run(picture(1200.0, 500.0, 4e7, 4.04e7, size=512), gemm(200.0))
    data = checks.merged(now, earlier)
    # The steps go with the GEMM peak they are a share of: a new peak drops the old steps.
    assert sorted(b["fullname"] for b in data["benchmarks"]) == sorted(
        [b["fullname"] for b in now["benchmarks"]]
        + [b["fullname"] for b in earlier["benchmarks"] if b["group"] in ("picture", "sweep")])
    assert checks.step_rows(data) == [] and checks.gemm_peak(data) == pytest.approx(200.0)
    assert [p["size"] for p in checks.picture_rows(data)] == [512, 256]
    text = report.render(data, [], [])
    assert 'from 2031-01-01T00:00:00 (`python scripts/bench.py -k "gemm or step or' in text
    assert "test_picture[256]" in text and "every number in one run" not in text
    assert "kept from earlier runs" in checks.headline(data)["note"]
    # Its row in the history replaces the kept run's, and no other.
    rows = [checks.headline(earlier), {**checks.headline(earlier), "cpu": "Older CPU 1000"}]
    assert checks.with_run(rows, data) == [rows[1], checks.headline(data)]
    assert checks.with_run(rows, now) == [*rows, checks.headline(now)]
    assert "every number in one run" in report.render(now, [], [])
    # A run measured by another CPU is refused before anything is measured.
    earlier["machine_info"]["cpu"]["brand_raw"] = "Invented CPU 9000 (not this one)"
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    with pytest.raises(SystemExit, match="measured on another CPU"):
        cli.main(["--merge", str(tmp_path / "earlier.json"), "--out", str(tmp_path / "new")])
    assert not (tmp_path / "new").exists()


def test_flops_grow_with_pixels_and_a_real_step_is_timed(benchmark, images_dir):
    builder = Builder()
    settings, transfer = builder.started(["precision=fp32", "+debug=tiny"], 32)
    small = vgg_flops(transfer.extractor, settings.style_layers, 32, 32)
    assert vgg_flops(transfer.extractor, settings.style_layers, 64, 64) == pytest.approx(
        4 * small)  # convs and Grams both linear in positions
    conv1_1 = 2 * (2 * 32 * 32 * 3 * 64 * 9)
    assert small > conv1_1 + 6 * 32 * 32 * 64 * 64  # conv1_1 and its Gram, and more
    benchmark.disabled = False  # pytest-benchmark turns itself off under xdist (`make test`)
    timed_step(benchmark, builder, ["precision=fp32", "+debug=tiny"], 32, rounds=1)
    assert benchmark.extra_info["flops"] == pytest.approx(small)
    assert benchmark.stats.stats.median > 0
