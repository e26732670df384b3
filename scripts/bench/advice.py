"""Judging the measurements: the headline numbers, each target met or not and why, and the
preset advice the numbers support. Every sentence is built from the measured data."""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from typing import Any

from .batching import batch_targets
from .harness import first_reaching
from .machine import isa_of
from .plan import (
    TARGET_BF16_SPEEDUP,
    TARGET_C2F_SPEEDUP,
    TARGET_CLI_SECONDS,
    TARGET_PEER_SPEEDUP,
    TARGET_QUALITY_GAP,
    TARGET_ROOFLINE_SHARE,
    TARGET_SWEEP_OVERHEAD,
    Plan,
)


def step_row(rows: Sequence[Mapping], size: int, precision: str, jit: bool) -> Mapping | None:
    return next((r for r in rows if (r["size"], r["precision"], r["jit_compile"]) ==
                 (size, precision, jit)), None)


def memory_budget(results: Mapping[str, Any]) -> int:
    """The RAM the largest-square figures are computed for: this machine's."""
    return int(results["memory"].get("budget_bytes") or results["environment"]["memory_bytes"])


def max_square_side(fit: Mapping[str, float], budget: float, saved: float = 0.0) -> int | None:
    """The largest square whose fitted peak fits in `budget` bytes; None when the fit saw no
    growth (sizes too small, as in quick runs)."""
    slope = fit["bytes_per_pixel"] - saved
    if slope <= 0 or budget <= fit["intercept_bytes"]:
        return None
    return int(((budget - fit["intercept_bytes"]) / slope) ** 0.5)


def speed_phrase(speedup: float) -> str:
    """'1.81× faster than fp32' or '17.2× slower than fp32'."""
    if speedup >= 1:
        return f"{speedup:.2f}× faster than fp32"
    return f"{1 / speedup:.1f}× slower than fp32"


def fmt(value: float | None, spec: str = ".3f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def cli_precision(results: Mapping[str, Any]) -> str:
    """The precision the CLI run used (older runs recorded it only in the plan)."""
    return results["cli_run"].get("precision") or results["plan"]["cli_precision"]


def summarise(results: dict[str, Any], plan: Plan) -> dict[str, Any]:
    """The headline numbers and each target, met or not."""
    rows = results["step_time"]
    size = plan.headline_size
    fp32, bf16 = step_row(rows, size, "fp32", False), step_row(rows, size, "bf16", False)
    peaks = results["matmul_peak"]
    roofline = {p: step_row(rows, size, p, False)["gflops"] / peaks[p]["gflops"]
                for p in plan.precisions}
    numpy = results.get("numpy_peak")
    numpy_share = fp32["gflops"] / numpy["gflops"] if numpy else None
    best_peak = max(peaks["fp32"]["gflops"], numpy["gflops"] if numpy else 0.0)
    best_share = fp32["gflops"] / best_peak
    speedup = fp32["seconds_per_iteration"] / bf16["seconds_per_iteration"]
    ttq = results["time_to_quality"]
    quality_gap = max(abs(v) for v in results["quality"]["relative_gap"].values())
    fit = results["memory"]["fits"]
    cli = results["cli_run"]
    square = plan.cli_size**2 / (cli["width"] * cli["height"])
    square_estimate = cli["wall_seconds"] + cli["loop_seconds"] * (square - 1)
    linear = all(f["r_squared"] > 0.99 for f in fit.values())
    shares = f"TensorFlow's {peaks['fp32']['gflops']:.0f} GFLOP/s: {roofline['fp32']:.0%}"
    if numpy:
        shares += f"; NumPy's {numpy['gflops']:.0f}: {numpy_share:.0%}"
    targets = [
        {"target": f"fp32 step at {size} px >= {TARGET_ROOFLINE_SHARE:.0%} of the best fp32 "
                   "GEMM measured (TensorFlow's or NumPy's)",
         "measured": f"{best_share:.0%} ({shares})", "met": best_share >= TARGET_ROOFLINE_SHARE},
        {"target": f"bf16 step >= {TARGET_BF16_SPEEDUP:g}x faster than fp32 at {size} px",
         "measured": f"{speedup:.2f}x", "met": speedup >= TARGET_BF16_SPEEDUP},
        {"target": f"{plan.cli_iterations} L-BFGS iterations at {plan.cli_size} px, "
                   f"{cli_precision(results)}, start to finish < {TARGET_CLI_SECONDS / 60:g} min",
         "measured": f"{cli['wall_seconds']:.0f} s ({cli['width']}×{cli['height']}; a "
                     f"{plan.cli_size}×{plan.cli_size} content: about {square_estimate:.0f} s, "
                     "estimated)",
         "met": results["cli_run"]["wall_seconds"] < TARGET_CLI_SECONDS},
        {"target": f"sweep overhead < {TARGET_SWEEP_OVERHEAD:.0%} ({plan.sweep_jobs} jobs)",
         "measured": f"{results['sweep']['overhead_share']:.0%}",
         "met": results["sweep"]["overhead_share"] < TARGET_SWEEP_OVERHEAD},
        {"target": "memory linear in pixels (R² > 0.99)",
         "measured": ", ".join(f"{p}: {f['bytes_per_pixel']:.0f} B/px, R² {f['r_squared']:.4f}"
                               for p, f in fit.items()),
         "met": linear},
        {"target": f"bf16 final content and style losses within {TARGET_QUALITY_GAP:.0%} of fp32 "
                   f"({results['quality']['size']} px)",
         "measured": f"{quality_gap:.1%}", "met": quality_gap <= TARGET_QUALITY_GAP},
        {"target": "bit-for-bit reruns (same seed, machine, precision)",
         "measured": ", ".join(f"{p}: {results['determinism'][p]}" for p in plan.precisions),
         "met": all(results["determinism"][p] for p in plan.precisions)},
    ]
    c2f = results.get("coarse_to_fine")
    if c2f:
        direct, coarse = c2f["direct"]["reached"], c2f["coarse_to_fine"]["reached"]
        targets.append(_sooner_target(
            f"coarse to fine reaches the direct {c2f['size']} px run's "
            f"{c2f['scale_iterations'][-1]}-iteration loss",
            direct["seconds"] / coarse["seconds"] if direct and coarse else None,
            TARGET_C2F_SPEEDUP))
    peer = results.get("peer")
    if peer:
        plain = peer["ours"][-1]
        targets.append(_sooner_target(
            f"reach the PyTorch L-BFGS peer's {peer['iterations']}-iteration loss at "
            f"{peer['size']} px in {plain['precision']} (as precision=auto picks here)",
            plain["reached"]["speedup"] if plain["reached"] else None, TARGET_PEER_SPEEDUP))
    targets += batch_targets(results)
    return {"size": size, "fp32_seconds": fp32["seconds_per_iteration"],
            "bf16_seconds": bf16["seconds_per_iteration"], "bf16_speedup": speedup,
            "faster_precision": "bf16" if speedup > 1 else "fp32",
            "roofline_share": roofline, "roofline_share_numpy": numpy_share,
            "roofline_share_best": best_share, "targets": targets,
            "lbfgs_seconds_to_quality": ttq["lbfgs"]["seconds"],
            "adam_seconds_to_quality": ttq["adam"]["seconds"]}


def _sooner_target(target: str, ratio: float | None, goal: float) -> dict[str, Any]:
    """A time-to-loss target: `ratio` is how many times sooner, None if never reached."""
    return {"target": f"{target} >= {goal:g}x sooner",
            "measured": f"{ratio:.2f}x" if ratio else "not reached",
            "met": bool(ratio and ratio >= goal)}


def why_missed(results: Mapping[str, Any]) -> list[str]:
    """One plain sentence per missed target, with the reason where the numbers show it."""
    summary = results["summary"]
    peaks = results["matmul_peak"]
    numpy = results.get("numpy_peak")
    notes = []
    for target in summary["targets"]:
        if target["met"]:
            continue
        text = target["target"]
        if text.startswith("bf16 step"):
            ratio = peaks["bf16"]["gflops"] / peaks["fp32"]["gflops"]
            isa = isa_of(results["environment"])
            units = [f for f in isa if "bf16" in f or f.startswith("amx")]
            amx = any(unit.startswith("amx") for unit in units)
            shares = summary["roofline_share"]
            note = (f"- Missed: bf16 speed-up {target['measured']}. This CPU's bf16 instructions: "
                    f"{', '.join(units) or 'none'} ({'with' if amx else 'no'} AMX); "
                    f"TensorFlow's best bf16 GEMM here is {ratio:.2f}× its best fp32 GEMM")
            if min(shares["fp32"], shares["bf16"]) >= 0.7:
                note += (f", and both steps already run near those peaks ({shares['fp32']:.0%} "
                         f"and {shares['bf16']:.0%}), so about {ratio:.1f}× is the ceiling on "
                         "this CPU.")
            else:
                note += (f"; the steps run at {shares['fp32']:.0%} (fp32) and "
                         f"{shares['bf16']:.0%} (bf16) of those peaks.")
            forms = peaks["fp32"]["forms"]
            smallest = min(forms, key=forms.get)
            if forms[smallest] < 0.8 * peaks["fp32"]["gflops"]:
                note += (f" (A small fp32 GEMM understates the fp32 peak: {smallest} gives "
                         f"{forms[smallest]:.0f} GFLOP/s here.)")
            notes.append(note)
        elif text.startswith("fp32 step"):
            note = f"- Missed: fp32 roofline share {target['measured']}."
            if numpy and numpy["gflops"] > peaks["fp32"]["gflops"]:
                note += (f" NumPy's GEMM ({numpy['gflops']:.0f} GFLOP/s) beats TensorFlow's "
                         f"({peaks['fp32']['gflops']:.0f}) on this CPU: part of the gap is in "
                         "TensorFlow's kernels, not in the step.")
            notes.append(note)
        elif text.startswith("sweep"):
            sweep = results["sweep"]
            parts = sweep["breakdown"]
            fixed = sweep["wall_seconds"] - sweep["loop_seconds"]
            plan = results["plan"]
            per_iteration = sweep["loop_seconds"] / (len(sweep["jobs"]) * plan["sweep_iterations"])
            share = TARGET_SWEEP_OVERHEAD
            needed = (1 - share) / share * fixed / (len(sweep["jobs"]) * per_iteration)
            floor = parts["startup"] + parts["compile"] + parts["exit"]
            notes.append(
                f"- Missed: sweep overhead {target['measured']}. The {len(sweep['jobs'])} loops "
                f"take {sweep['loop_seconds']:.0f} s in all at {plan['sweep_size']} px, against "
                f"{fixed:.0f} s of costs that do not shrink with them; start-up, the one compile "
                f"and interpreter exit alone are {floor:.1f} s ({floor / sweep['wall_seconds']:.0%}"
                f" of the wall time), per-job setup and output "
                f"{parts['job_setup_and_output'] / len(sweep['jobs']):.2f} s a job. Under "
                f"{share:.0%} needs about {needed:.0f} iterations per job at this size, not "
                f"{plan['sweep_iterations']}."
            )
        else:
            notes.append(f"- Missed: {text}: {target['measured']}.")
    return notes


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


def _history_bytes(history_size: int) -> int:
    return 2 * history_size * 3 * 4  # s and y rows, 3 float32 channels per pixel


def recommend_precision(results: Mapping[str, Any],
                        history: Sequence[Mapping[str, Any]] = ()) -> str:
    """`precision=auto`, never bf16 unconditionally: the measured bf16/fp32 ratio here, and
    how far apart the machines measured before were."""
    summary = results["summary"]
    isa = isa_of(results["environment"])
    units = [f for f in isa if "bf16" in f or f.startswith("amx")]
    faster = "bf16" if summary["bf16_speedup"] > 1 else "fp32"
    gaps = results["quality"]["relative_gap"]
    sentence = (
        f"**Precision: `precision=auto`**, which probes which precision is faster on the machine "
        f"it runs on. On this CPU (bf16 instructions: {', '.join(units) or 'none'}) bf16 was "
        f"{speed_phrase(summary['bf16_speedup'])} at {summary['size']} px "
        f"({summary['fp32_seconds']:.3f} vs {summary['bf16_seconds']:.3f} s/it, a bf16/fp32 "
        f"speed ratio of {summary['bf16_speedup']:.2f}), so auto picks {faster} here; bf16's "
        f"final losses differ from fp32's by {gaps['content']:+.1%} (content) and "
        f"{gaps['style']:+.1%} (style) at {results['quality']['size']} px."
    )
    ratios = [h["fp32_seconds"] / h["bf16_seconds"] for h in history
              if h.get("fp32_seconds") and h.get("bf16_seconds")]
    if len(ratios) > 1:
        sentence += (f" The machines measured so far range from {min(ratios):.2f} to "
                     f"{max(ratios):.2f} (table below), which is why neither precision is a "
                     "safe default.")
    return sentence


def recommend(results: Mapping[str, Any], history: Sequence[Mapping[str, Any]] = ()
              ) -> list[str]:
    """Preset advice that the step-time, tuning, memory and CLI numbers support, as sentences."""
    tuning, cli, ttq = results["tuning"], results["cli_run"], results["time_to_quality"]
    analysis = tuning_analysis(tuning)
    rows = analysis["rows"]
    runs = {r["label"]: r for r in tuning["runs"]}
    preset = runs[tuning["reference"]]
    advice = [recommend_precision(results, history)]

    plain = [r for r in runs.values()
             if r["optimizer"] == "lbfgs" and r["params"]["line_search"] == "none"]
    best, _ = fastest_history(tuning)
    h_best, h_preset = best["params"]["history_size"], preset["params"]["history_size"]
    saving = 1 - rows[best["label"]]["reach_seconds"] / rows[preset["label"]]["reach_seconds"]
    step_cost = cli["late_seconds_per_iteration"] - cli["early_seconds_per_iteration"]
    fit = results["memory"]["fits"]["fp32"]
    budget = memory_budget(results)

    def side(saved: float = 0.0) -> str:
        found = max_square_side(fit, budget, saved)
        return "n/a" if found is None else str(found)

    if h_best != h_preset:
        advice.append(
            f"**L-BFGS `history_size`: {h_preset} → {h_best}.** It reaches the common loss "
            f"({analysis['common_loss']:.4g}) in {rows[best['label']]['reach_seconds']:.1f} s vs "
            f"{rows[preset['label']]['reach_seconds']:.1f} s ({saving:.0%} sooner), its final "
            f"loss after {tuning['iterations']} iterations is within "
            f"{abs(best['final_total'] / preset['final_total'] - 1):.2%} of the preset's, its "
            f"late steps cost {fmt(best['late_seconds_per_iteration'])} vs "
            f"{fmt(preset['late_seconds_per_iteration'])} s/it, and its history takes "
            f"{_history_bytes(h_best)} instead of {_history_bytes(h_preset)} bytes per pixel "
            f"(so the largest square in this machine's {budget / 2**30:.1f} GiB would grow from "
            f"about {side()} to {side(_history_bytes(h_preset) - _history_bytes(h_best))} px, "
            "by the fp32 fit). "
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
                f"{fmt(check['adam_target_seconds'], '.0f', 'never')} s / "
                f"{check['adam_target_iterations']} iterations (preset: "
                f"{fmt(lbfgs['seconds'], '.0f', 'never')} s / {lbfgs['iterations']})."
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
    lbfgs_s, adam_s = ttq["lbfgs"]["seconds"], ttq["adam"]["seconds"]
    bar = f"At {ttq['size']} px, to Adam's {ttq['adam']['iterations_run']}-iteration loss: "
    if lbfgs_s is not None and (adam_s is None or lbfgs_s <= adam_s):
        advice.append(
            f"Optimiser: keep L-BFGS the default. {bar}L-BFGS {lbfgs_s:.0f} s, Adam "
            + (f"{adam_s:.0f} s ({adam_s / lbfgs_s:.1f}× later)." if adam_s is not None
               else "never.")
        )
    elif adam_s is not None:
        advice.append(
            f"Optimiser: Adam got there first on this machine. {bar}Adam {adam_s:.0f} s, L-BFGS "
            + (f"{lbfgs_s:.0f} s." if lbfgs_s is not None else "not within its iterations.")
        )
    c2f = results.get("coarse_to_fine")
    if c2f and c2f["direct"]["reached"]:
        direct = c2f["direct"]["reached"]["seconds"]
        reached = c2f["coarse_to_fine"]["reached"]
        split = (f"`scales=[{','.join(str(s) for s in c2f['scales'])}] "
                 f"scale_iterations=[{','.join(str(n) for n in c2f['scale_iterations'])}]`")
        bar = f"the direct run's {c2f['scale_iterations'][-1]}-iteration loss"
        if reached is None:
            advice.append(f"Coarse to fine: keep direct runs at {c2f['size']} px; {split} did "
                          f"not reach {bar} ({c2f['precision']}).")
        else:
            verdict = (f"use {split} for {c2f['size']} px results" if reached["seconds"] < direct
                       else f"a direct run is as fast at {c2f['size']} px")
            advice.append(f"Coarse to fine: {verdict}. {split} reached {bar} in "
                          f"{reached['seconds']:.0f} s of loop time vs {direct:.0f} s "
                          f"({c2f['precision']}).")
    return advice
