"""The batch section (issue 16): images·iterations per second of B images in one compiled step,
the Fig. 3 grid run sequentially against `hydra/launcher=nst_batched`, peak memory per member
and `batch_size=auto`'s choice, the device TensorFlow ran on, and what to expect on a GPU (an
estimate from FLOP counts, never measured here). `--only batch` runs this section alone."""

from __future__ import annotations

import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from . import ENTRY, ROOT, RUN_SCRIPT, jsonable
from .harness import (
    Builder,
    collect,
    load_images,
    members,
    settings_for,
    time_calls,
)
from .machine import cpu_label, describe
from .plan import (
    TARGET_BATCH_MEMBERS,
    TARGET_BATCH_SIZE,
    TARGET_BATCH_SPEEDUP,
    TARGET_BATCH_SWEEP_SPEEDUP,
    Plan,
)
from .roofline import vgg_flops

Log = Callable[[str], None]
GIB, MIB = 2**30, 2**20

# The GPU of the estimate: datasheet dense peaks (FLOP/s), no sparsity. Never measured here.
GPU_ASSUMED = {"name": "NVIDIA A100 SXM", "sms": 108,
               "peaks": {"fp32": 19.5e12, "tf32": 156e12, "bf16": 312e12}}
GPU_TILE = 128  # output rows and columns per thread block of a typical GPU GEMM kernel
GPU_SIZES = (256, 512)
FIG3_ARGS = ("+experiment=fig3", "optimizer.line_search=none", "progress=false")
SWEEPS = (  # (name, launcher overrides)
    ("sequential", ()),
    ("batched auto", ("hydra/launcher=nst_batched",)),
    ("batched 20", ("hydra/launcher=nst_batched", "hydra.launcher.batch_size=20")),
)


# --- measuring ----------------------------------------------------------------------------


def section_batch(plan: Plan, builder: Builder, scratch: Path, log: Log) -> dict[str, Any]:
    """Every measurement of the section, in one run."""
    from nst_tf.cache import default_cache_dir
    from nst_tf.pipeline import AUTO_BATCH_CAP
    from nst_tf.session import SESSION

    auto, choice = SESSION.precision(settings_for(["precision=auto"]), builder.weights,
                                     default_cache_dir())
    precisions = list(dict.fromkeys(["fp32", auto.precision.value]))
    log(f"batch: precision=auto uses {auto.precision.value} here ({choice.get('decided')})")
    result: dict[str, Any] = {"device": device(), "auto_precision": choice,
                              "precisions": precisions, "auto_cap": AUTO_BATCH_CAP,
                              "repeats": dict(plan.batch_repeats)}
    result["throughput"], result["placed_on"] = throughput(plan, builder, precisions, log)
    result["memory"] = memory_per_member(plan, AUTO_BATCH_CAP, log)
    result["sweep"] = fig3_sweeps(plan, scratch, AUTO_BATCH_CAP, log)
    result["gpu_estimate"] = gpu_estimate(builder)
    return result


def device() -> dict[str, Any]:
    """What TensorFlow sees: its device for the step (nst_tf.precision's view) and any GPUs."""
    import tensorflow as tf

    from nst_tf.precision import machine

    gpus = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        gpus.append({"name": details.get("device_name", gpu.name),
                     "compute_capability": details.get("compute_capability")})
    return {"tensorflow_device": machine()["device"], "gpus": gpus}


def throughput(plan: Plan, builder: Builder, precisions: Sequence[str], log: Log
               ) -> tuple[list[dict], str | None]:
    """Seconds per step_values() of B images at each size, after the compile and one warm-up
    step; images·iterations per second and the ratio to B = 1. A B whose estimated peak does
    not fit in memory is skipped. Also the device the image variable was placed on."""
    from nst_tf.memory import available_bytes, estimate_peak

    rows: list[dict] = []
    placed = None
    for precision in precisions:
        settings = settings_for([f"precision={precision}", "optimizer.line_search=none"])
        optimizer = settings.optimizer.name
        history = getattr(settings.optimizer, "history_size", 0)
        for size in plan.batch_sizes:
            content, style = load_images(settings, size, square=True)
            flops = vgg_flops(builder.extractor(settings), settings.style_layers,
                              *content.shape[:2])["total_flops"]
            single = None
            for count in plan.batch_members:
                row: dict[str, Any] = {"size": size, "precision": precision, "members": count}
                need = estimate_peak(size * size, style.shape[0] * style.shape[1], optimizer,
                                     history, count)
                available = available_bytes()
                if available is not None and need > available:
                    row["skipped"] = (f"needs about {need / GIB:.1f} GiB by the memory model, "
                                      f"{available / GIB:.1f} GiB available")
                    rows.append(row)
                    log(f"batch {size}px {precision} B={count}: skipped, {row['skipped']}")
                    continue
                transfer = builder.transfer(settings, content.shape[:2], count)
                placed = placed or transfer.image.device
                transfer.start_batch(members(settings, content, style, count))
                times = time_calls(transfer.step_values, plan.batch_repeats[size])
                median = statistics.median(times)
                rate = count / median
                single = rate if count == 1 else single
                row.update(seconds_per_iteration=median, min_seconds=min(times), times=times,
                           compile_seconds=transfer.compile_seconds, images_per_second=rate,
                           ratio=rate / single if single else None,
                           gflops=count * flops / median / 1e9)
                rows.append(row)
                log(f"batch {size}px {precision} B={count}: {median:.3f} s/it, "
                    f"{rate:.2f} images·it/s" + (f" ({row['ratio']:.2f}x B=1)" if single else ""))
                del transfer
                collect()
    return rows, placed


def probe(size: int, precision: str, steps: int, batch: int) -> dict[str, Any]:
    """The memory section's probe (`bench.py probe-memory`) for `batch` images, in a fresh
    process: its peak RSS."""
    command = [sys.executable, str(ENTRY), "probe-memory", str(size), precision, str(steps),
               str(batch)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"memory probe failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory_per_member(plan: Plan, cap: int, log: Log) -> dict[str, Any]:
    """Peak RSS of B images at one size (fp32, a fresh process each), the slope per member
    against memory.member_bytes, and batch_size=auto's choice against what fits by the slope."""
    from nst_tf.memory import available_bytes, largest_batch, member_bytes

    size = plan.batch_memory_size
    points = []
    for count in plan.batch_memory_members:
        points.append(probe(size, "fp32", plan.memory_steps, count))
        log(f"batch memory {size}px B={count}: peak {points[-1]['peak_rss'] / MIB:.0f} MiB")
    slope, intercept = (float(v) for v in np.polyfit(
        [p["batch"] for p in points], [p["peak_rss"] for p in points], 1))
    settings = settings_for()
    optimizer = settings.optimizer.name
    history = getattr(settings.optimizer, "history_size", 0)
    available = available_bytes() or float(os.sysconf("SC_PAGE_SIZE") * os.sysconf(
        "SC_PHYS_PAGES"))
    choices = []
    for side in plan.batch_auto_sizes:
        content, style = load_images(settings, side, square=False)
        pixels = content.shape[0] * content.shape[1]
        per_member = slope * pixels / (size * size)  # the measured slope, scaled by pixels
        fits = (int((available - intercept) // per_member)
                if per_member > 0 and available > intercept else None)
        choices.append({
            "size": side, "content": [content.shape[1], content.shape[0]],
            "style_pixels": style.shape[0] * style.shape[1],
            "auto": largest_batch(pixels, style.shape[0] * style.shape[1], optimizer, history,
                                  cap, available),
            "fits_measured": fits, "measured_member_bytes": per_member,
            "estimate_member_bytes": member_bytes(pixels, optimizer, history)})
    return {"size": size, "precision": "fp32", "steps": plan.memory_steps, "points": points,
            "bytes_per_member": slope, "intercept_bytes": intercept,
            "estimate_bytes_per_member": member_bytes(size * size, optimizer, history),
            "optimizer": optimizer, "history_size": history, "available_bytes": available,
            "choices": choices}


def fig3_sweeps(plan: Plan, scratch: Path, cap: int, log: Log) -> dict[str, Any]:
    """The Fig. 3 grid as real `scripts/run.py -m` runs: the default (sequential) launcher, then
    hydra/launcher=nst_batched with batch_size=auto, and batch_size=20 if the memory model
    says 20 images fit. Wall time start to finish; how each job ended, from sweep.csv."""
    from nst_tf.memory import available_bytes, estimate_peak, largest_batch

    args = [*FIG3_ARGS[:1], f"size={plan.batch_sweep_size}",
            f"iterations={plan.batch_sweep_iterations}", *FIG3_ARGS[1:], *plan.batch_sweep_grid]
    settings = settings_for([a for a in args if not a.startswith("progress")
                             and a not in plan.batch_sweep_grid])
    content, style = load_images(settings, plan.batch_sweep_size, square=False)
    pixels, style_pixels = content.shape[0] * content.shape[1], style.shape[0] * style.shape[1]
    optimizer = settings.optimizer.name
    history = getattr(settings.optimizer, "history_size", 0)
    jobs = plan.batch_sweep_jobs
    available = available_bytes()
    need = estimate_peak(pixels, style_pixels, optimizer, history, jobs)
    fits = available is None or need <= available
    runs = []
    for name, launcher in SWEEPS:
        if name == "batched 20" and (not fits or jobs < 20):
            runs.append({"name": name, "skipped": True})
            continue
        folder = scratch / f"fig3_{name.replace(' ', '_')}"
        command = ["-m", *args, *launcher]
        started = time.perf_counter()
        done = subprocess.run([sys.executable, str(RUN_SCRIPT), *command,
                               f"hydra.sweep.dir={folder}"], cwd=ROOT, capture_output=True,
                              text=True, check=False)
        wall = time.perf_counter() - started
        run = {"name": name, "command": "python scripts/run.py " + " ".join(command),
               "wall_seconds": wall, "exit_code": done.returncode, **read_sweep(folder)}
        if done.returncode != 0:
            run["stderr"] = done.stderr[-2000:]
        runs.append(run)
        log(f"batch fig3 {name}: {wall:.1f} s, {run['statuses'].get('ok', 0)}/{jobs} ok, "
            f"batches {run['batches']}")
    return {"jobs": jobs, "size": plan.batch_sweep_size,
            "iterations": plan.batch_sweep_iterations, "content": [content.shape[1],
                                                                    content.shape[0]],
            "auto_expected": largest_batch(pixels, style_pixels, optimizer, history,
                                           min(cap, jobs), available),
            "batch20": {"fits": fits, "estimate_bytes": need, "available_bytes": available},
            "runs": runs}


def read_sweep(folder: Path) -> dict[str, Any]:
    """How a sweep's jobs ended (sweep.csv), their precision and the batches they ran in (each
    job's summary.json)."""
    table = folder / "sweep.csv"
    statuses: Counter[str] = Counter()
    if table.is_file():
        with table.open(newline="") as f:
            statuses.update(row["status"] for row in csv.DictReader(f))
    sizes: Counter[int] = Counter()
    precision = set()
    for summary in folder.glob("*/summary.json"):
        data = json.loads(summary.read_text())
        stages = data.get("stages") or [{}]
        sizes[int(stages[0].get("batch", 1))] += 1
        precision.add((data.get("precision") or {}).get("used"))
    batches = sorted((b for b, n in sizes.items() for _ in range(n // b)), reverse=True)
    return {"statuses": dict(statuses), "batches": batches,
            "precision": ", ".join(sorted(p for p in precision if p)) or None}


def gpu_estimate(builder: Builder) -> dict[str, Any]:
    """What the GPU paragraph is computed from: FLOPs per iteration and the deepest conv's
    output per image at GPU_SIZES (analytic, as in the roofline section)."""
    settings = settings_for()
    extractor = builder.extractor(settings)
    sizes = []
    for size in GPU_SIZES:
        flops = vgg_flops(extractor, settings.style_layers, size, size)
        deepest = flops["convs"][-1]  # the deepest layer the losses read is a conv
        sizes.append({"size": size, "flops": flops["total_flops"],
                      "layer": flops["deepest_layer"],
                      "positions": deepest["height"] * deepest["width"],
                      "channels": deepest["c_out"]})
    return {"assumed": GPU_ASSUMED, "tile": GPU_TILE, "sizes": sizes}


# --- judging and reporting ----------------------------------------------------------------


def headline_row(batch: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The target's row: 256 px, B = 4 in the precision auto uses here; a quick plan's nearest
    (the largest size, the largest B up to 4)."""
    precision = batch["precisions"][-1]
    rows = [r for r in batch["throughput"] if r["precision"] == precision]
    sizes = {r["size"] for r in rows}
    size = TARGET_BATCH_SIZE if TARGET_BATCH_SIZE in sizes else max(sizes)
    counts = [r["members"] for r in rows if r["size"] == size and r["members"] > 1]
    if not counts:
        return None
    below = [c for c in counts if c <= TARGET_BATCH_MEMBERS]
    count = max(below) if below else min(counts)
    return next(r for r in rows if r["size"] == size and r["members"] == count)


def sweep_speedups(sweep: Mapping[str, Any]) -> dict[str, float | None]:
    """Each batched sweep's wall time against the sequential one's (how many times sooner)."""
    runs = {r["name"]: r for r in sweep["runs"]}
    sequential = runs["sequential"]["wall_seconds"]
    return {name: (sequential / r["wall_seconds"] if "wall_seconds" in r else None)
            for name, r in runs.items() if name != "sequential"}


def batch_targets(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The section's two targets, met or not; none when the section was not measured."""
    batch = results.get("batch")
    if not batch:
        return []
    row = headline_row(batch)
    precision = batch["precisions"][-1]
    if row is None:
        first = {"target": f"batched step >= {TARGET_BATCH_SPEEDUP:g}x B = 1's images·it/s",
                 "measured": "not measured", "met": False}
    else:
        ratio = row.get("ratio")
        others = [r for r in batch["throughput"] if r["precision"] != precision
                  and (r["size"], r["members"]) == (row["size"], row["members"])]
        measured = f"{ratio:.2f}x" if ratio else f"not measured ({row.get('skipped')})"
        measured += "".join(f"; {r['precision']} {r['ratio']:.2f}x" for r in others
                            if r.get("ratio"))
        first = {"target": f"B = {row['members']} at {row['size']} px, {precision} "
                           f"(precision=auto here): >= {TARGET_BATCH_SPEEDUP:g}x B = 1's "
                           "images·iterations/s",
                 "measured": measured, "met": bool(ratio and ratio >= TARGET_BATCH_SPEEDUP)}
    sweep = batch["sweep"]
    speedups = sweep_speedups(sweep)
    auto = speedups.get("batched auto")
    measured_runs = [r for r in sweep["runs"] if "wall_seconds" in r]
    every_ok = all(r["statuses"].get("ok", 0) == sweep["jobs"] for r in measured_runs)
    walls = {r["name"]: r["wall_seconds"] for r in measured_runs}
    text = (f"{auto:.2f}x ({walls['sequential']:.0f} s → {walls['batched auto']:.0f} s)"
            if auto else "not measured")
    if speedups.get("batched 20"):
        text += f"; batch_size=20: {speedups['batched 20']:.2f}x"
    text += "; ok jobs " + ", ".join(f"{r['statuses'].get('ok', 0)}/{sweep['jobs']}"
                                     for r in measured_runs)
    second = {"target": f"the Fig. 3 grid ({sweep['jobs']} jobs, {sweep['size']} px, "
                        f"{sweep['iterations']} iterations) with hydra/launcher=nst_batched "
                        f"(batch_size=auto) >= {TARGET_BATCH_SWEEP_SPEEDUP:g}x sooner than "
                        "sequentially, every job ok",
              "measured": text,
              "met": bool(auto and auto >= TARGET_BATCH_SWEEP_SPEEDUP and every_ok)}
    return [first, second]


def render_batch(results: Mapping[str, Any]) -> list[str]:
    """The markdown section."""
    batch = results.get("batch")
    lines = ["## Batching: many runs in one compiled step", ""]
    if not batch:
        return [*lines, "Not measured in this run (a run before the section existed): "
                "`python scripts/bench.py --only batch` measures it alone.", ""]
    return [*lines, *_device(results), *_throughput(results), *_sweep(batch),
            *_memory(batch), *_gpu(batch)]


def _device(results: Mapping[str, Any]) -> list[str]:
    batch, env = results["batch"], results["environment"]
    seen = batch["device"]
    gpus = ", ".join(f"{g['name']}" + (f" (compute capability {'.'.join(map(str, cc))})"
                                       if (cc := g.get("compute_capability")) else "")
                     for g in seen["gpus"]) or "none"
    choice = batch["auto_precision"]
    ratio = choice.get("bf16_speedup")
    return [
        f"Device: TensorFlow ran the step on **{seen['tensorflow_device']}**"
        + (f" (the image variable was placed on `{batch['placed_on']}`)"
           if batch.get("placed_on") else "")
        + f"; CPU {cpu_label(env)}; GPUs TensorFlow can use: {gpus}. `precision=auto` uses "
        f"**{choice['used']}** here ({choice.get('decided') or 'fixed'}"
        + (f"; bf16's step {ratio:.2f}× as fast as fp32's in its probe" if ratio else "")
        + "), so the tables below are in " + " and ".join(batch["precisions"]) + ".",
        "",
    ]


def _throughput(results: Mapping[str, Any]) -> list[str]:
    batch = results["batch"]
    repeats = ", ".join(f"{n} at {s} px" for s, n in batch["repeats"].items())
    lines = [
        "### Throughput",
        "",
        "B images of one size in one compiled step (`StyleTransfer(..., batch=B)`, the default "
        "L-BFGS preset with `optimizer.line_search=none`): a square crop of the default content "
        "at size×size, the default style, white noise of seeds 0..B-1. Median wall time of the "
        f"timed `step_values()` calls ({repeats}) after the compile and one warm-up step; "
        "images·iterations per second = B / (s per iteration), measured in this one run. "
        "GFLOP/s counts the analytic FLOPs of the roofline section, B times.",
        "",
        "| size | precision | B | s/it | images·it/s | × B = 1 | GFLOP/s | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in batch["throughput"]:
        if "skipped" in r:
            lines.append(f"| {r['size']} | {r['precision']} | {r['members']} | skipped: "
                         f"{r['skipped']} | | | | |")
            continue
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") else "—"
        lines.append(f"| {r['size']} | {r['precision']} | {r['members']} | "
                     f"{r['seconds_per_iteration']:.3f} | {r['images_per_second']:.2f} | "
                     f"{ratio} | {r['gflops']:.0f} | {r['compile_seconds']:.1f} |")
    row = headline_row(batch)
    if row and row.get("ratio"):
        lines += ["", f"At {row['size']} px in {row['precision']}, {row['members']} images in "
                  f"one step give **{row['ratio']:.2f}×** the images·iterations per second of "
                  f"one (target ≥ {TARGET_BATCH_SPEEDUP:g}×)."]
    return [*lines, ""]


def _sweep(batch: Mapping[str, Any]) -> list[str]:
    sweep = batch["sweep"]
    speedups = sweep_speedups(sweep)
    w, h = sweep["content"]
    lines = [
        f"### The Fig. 3 grid, sequential and batched ({sweep['jobs']} jobs)",
        "",
        f"Real `scripts/run.py -m` processes, one after another in this run, timed start to "
        f"finish (content {w}×{h}); the jobs' statuses are read from each sweep's "
        "`sweep.csv`, their batches from the jobs' `summary.json`.",
        "",
        "| sweep | command | batches | precision | wall s | ok jobs | × sooner |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sweep["runs"]:
        if r.get("skipped"):
            continue
        sooner = speedups.get(r["name"])
        batches = " + ".join(f"{b}" if n == 1 else f"{n} × {b}"
                             for b, n in Counter(r["batches"]).items()) or "—"
        lines.append(f"| {r['name']} | `{r['command']}` | {batches} | {r['precision'] or '—'} "
                     f"| {r['wall_seconds']:.1f} | {r['statuses'].get('ok', 0)}/{sweep['jobs']} "
                     f"| {f'{sooner:.2f}×' if sooner else '—'} |")
    fit = sweep["batch20"]
    available = fit["available_bytes"]
    room = f"{available / GIB:.1f} GiB available" if available else "no limit found"
    lines += ["", f"`batch_size=auto` expected {sweep['auto_expected']} images per batch here "
              f"(at most {batch['auto_cap']}). `batch_size=20`: "
              + ("run, as the memory model's estimate for 20 images, "
                 f"{fit['estimate_bytes'] / GIB:.1f} GiB, fits ({room})." if fit["fits"] else
                 f"**not run**: the memory model's estimate for 20 images, "
                 f"{fit['estimate_bytes'] / GIB:.1f} GiB, does not fit ({room}).")]
    for r in sweep["runs"]:
        if r.get("exit_code"):
            lines += ["", f"The {r['name']} sweep exited with {r['exit_code']}: "
                      + ", ".join(f"{n} {s}" for s, n in r["statuses"].items()) + "."]
    return [*lines, ""]


def _memory(batch: Mapping[str, Any]) -> list[str]:
    memory = batch["memory"]
    slope, estimate = memory["bytes_per_member"], memory["estimate_bytes_per_member"]
    lines = [
        f"### Memory per member at {memory['size']} px",
        "",
        f"Peak RSS (VmHWM) of a fresh process that builds B images' step at "
        f"{memory['size']}×{memory['size']} in {memory['precision']} and takes "
        f"{memory['steps']} step{'s' if memory['steps'] != 1 else ''} (the memory section's "
        "probe).",
        "",
        "| B | peak RSS MiB | after model build MiB |",
        "|---|---|---|",
        *(f"| {p['batch']} | {p['peak_rss'] / MIB:.0f} | {p['model_rss'] / MIB:.0f} |"
          for p in memory["points"]),
        "",
        f"Linear fit peak = a + b·B: b = **{slope / MIB:.0f} MiB per member**, a = "
        f"{memory['intercept_bytes'] / MIB:.0f} MiB. `memory.member_bytes` estimates "
        f"{estimate / MIB:.0f} MiB per member ({memory['optimizer']}, history "
        f"{memory['history_size']}): the measured slope is {slope / estimate:.2f}× the "
        "estimate.",
        "",
        f"`batch_size=auto` (at most {batch['auto_cap']}) against what fits by the measured "
        f"slope (scaled by pixels, with the fit's a) in the "
        f"{memory['available_bytes'] / GIB:.1f} GiB available to this process, for the default "
        "content and style:",
        "",
        "| size | content | auto picks | fits by the measured slope | member MiB measured / "
        "estimated |",
        "|---|---|---|---|---|",
    ]
    for c in memory["choices"]:
        w, h = c["content"]
        fits = c["fits_measured"]
        lines.append(f"| {c['size']} | {w}×{h} | {c['auto']} | "
                     f"{fits if fits is not None else 'n/a (no growth seen)'} | "
                     f"{c['measured_member_bytes'] / MIB:.0f} / "
                     f"{c['estimate_member_bytes'] / MIB:.0f} |")
    return [*lines, ""]


def _gpu(batch: Mapping[str, Any]) -> list[str]:
    estimate = batch["gpu_estimate"]
    gpu, tile = estimate["assumed"], estimate["tile"]
    peaks = gpu["peaks"]
    measured = bool(batch["device"]["gpus"])
    parts = []
    fill = []
    for s in estimate["sizes"]:
        side = int(math.isqrt(s["positions"]))
        tiles = math.ceil(s["positions"] / tile) * math.ceil(s["channels"] / tile)
        parts.append(f"{s['size']} px: {s['flops'] / 1e9:.0f} GFLOP, at least "
                     f"{s['flops'] / peaks['tf32'] * 1e3:.2f} ms (TF32) or "
                     f"{s['flops'] / peaks['bf16'] * 1e3:.2f} ms (bf16) per iteration")
        fill.append(f"at {s['size']} px {s['layer']} has {side}×{side} = {s['positions']} "
                    f"positions × {s['channels']} channels per image, {tiles} tiles of "
                    f"{tile}×{tile} for {gpu['sms']} SMs (about B = "
                    f"{math.ceil(gpu['sms'] / tiles)} gives each SM one)")
    return [
        "### On a GPU: an ESTIMATE, not measured",
        "",
        ("TensorFlow saw a GPU in this run, so the tables above are that GPU's measurements; "
         "the paragraph below is still only the estimate. " if measured else
         "No GPU ran here: nothing below is measured. ")
        + f"**ESTIMATE.** Assumed device: an {gpu['name']} at its datasheet dense peaks, "
        f"{peaks['fp32'] / 1e12:g} TFLOP/s fp32, {peaks['tf32'] / 1e12:g} TF32 (TensorFlow "
        f"runs fp32 convolutions as TF32 on such a GPU unless told not to) and "
        f"{peaks['bf16'] / 1e12:g} bf16. One iteration's analytic FLOPs per image (the roofline "
        "section's count) against those peaks: " + "; ".join(parts) + ". Those are floors at "
        "100% of the peak, not predictions. A single image leaves such a device mostly idle: a "
        "convolution runs as a GEMM whose rows are the output positions, and "
        + "; ".join(fill) + " (a tile is the output block one thread block typically "
        "computes). Every kernel of the step also pays its launch latency whatever its size. B "
        "images multiply the rows by B and share the launches, so on a GPU images·iterations per "
        "second should keep growing with B until the device is full or its memory is; "
        "`python scripts/bench.py --only batch` there measures it.",
        "",
        "Nothing in the batch path assumes a CPU: nst_tf places no op on a device (TensorFlow "
        "puts the step on the GPU when it sees one); the step, L-BFGS's two-loop recursion "
        "included, is one `tf.function`, read by the host once per iteration (the (B, values) "
        "losses); `precision=auto` picks bf16 on a GPU only where it computes it natively "
        "(compute capability 8 or newer); `jit_compile=true` (XLA) is a per-run setting. One "
        "caveat: `batch_size=auto`'s memory model reads host RAM, not the GPU's memory, so on a "
        "GPU give `hydra.launcher.batch_size=N`.",
        "",
    ]


# --- the section alone (`scripts/bench.py --only batch`) ------------------------------------


def run_alone(plan: Plan, out: Path, log: Log = print) -> dict[str, Any]:
    """Measure only this section; write its performance.json and PERFORMANCE.md into `out`."""
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)

    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, Any] = {"only": "batch", "plan": asdict(plan), "environment": describe()}
    with tempfile.TemporaryDirectory(prefix="nst-bench-") as scratch:
        results["batch"] = section_batch(plan, Builder(), Path(scratch), log)
    results["environment"]["loadavg_end"] = os.getloadavg()[0]
    results["total_seconds"] = time.perf_counter() - started
    write_alone(results, out)
    return results


def write_alone(results: dict[str, Any], out: Path) -> None:
    """performance.json and PERFORMANCE.md of a `--only batch` run."""
    results["summary"] = {"targets": batch_targets(results)}
    (out / "performance.json").write_text(json.dumps(results, indent=1, default=jsonable) + "\n")
    env = results["environment"]
    quick = results["plan"]["name"] != "full"
    lines = [
        "# Performance: the batch section alone",
        "",
        f"Generated by `python scripts/bench.py --only batch{' --quick' if quick else ''}` "
        f"({'QUICK run: tiny sizes, not real numbers' if quick else 'full plan'}, "
        f"{results['total_seconds'] / 60:.1f} min), measured in that one run; the raw data "
        "is in `performance.json`. The whole benchmark: `python scripts/bench.py`.",
        "",
        f"- Date: {env['date']}; TensorFlow {env['tensorflow']}; source {env['source']}",
        f"- CPU: {cpu_label(env)}, {env['cores']} cores; RAM {env['memory_bytes'] / GIB:.1f} GiB",
        f"- Load average: {env['loadavg_start']:.2f} at the start, "
        f"{env.get('loadavg_end', float('nan')):.2f} at the end (1 min)",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
          for t in results["summary"]["targets"]),
        "",
        *render_batch(results),
    ]
    (out / "PERFORMANCE.md").write_text("\n".join(lines) + "\n")


def one_line(results: Mapping[str, Any]) -> str:
    """What `--only batch` prints."""
    targets = results["summary"]["targets"]
    return "batch: " + "; ".join(f"{t['measured']} ({'met' if t['met'] else 'not met'})"
                                 for t in targets)
