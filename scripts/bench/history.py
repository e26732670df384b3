"""Earlier machines' headline figures (docs/performance_history.json): the report shows them
next to this run's, and a full run writes them with its own added beside its report."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .advice import fmt
from .machine import cpu_label, isa_of, isa_summary


def load(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["machines"] if path.exists() else []


def headline(results: Mapping[str, Any]) -> dict[str, Any]:
    """This run's entry: which machine, and its headline figures."""
    env, summary = results["environment"], results["summary"]
    numpy = results.get("numpy_peak")
    fp32 = next(r for r in results["step_time"] if (r["size"], r["precision"], r["jit_compile"])
                == (summary["size"], "fp32", False))
    return {
        "cpu": cpu_label(env), "isa": isa_of(env), "cores": env.get("cores"),
        "memory_gib": round(env["memory_bytes"] / 2**30, 1), "date": env["date"],
        "tensorflow": env["tensorflow"], "source": env["source"], "size": summary["size"],
        "fp32_seconds": round(summary["fp32_seconds"], 4),
        "bf16_seconds": round(summary["bf16_seconds"], 4),
        "fp32_gflops": round(fp32["gflops"], 1),
        "tf_fp32_peak_gflops": round(results["matmul_peak"]["fp32"]["gflops"], 1),
        "numpy_fp32_peak_gflops": round(numpy["gflops"], 1) if numpy else None,
        "note": f"python scripts/bench.py, {results['plan']['name']} run "
                f"({results['total_seconds'] / 60:.0f} min)",
    }


def same_run(entry: Mapping[str, Any], other: Mapping[str, Any]) -> bool:
    return entry.get("date") == other.get("date") and entry.get("source") == other.get("source")


def append(path: Path, entry: Mapping[str, Any]) -> None:
    """Add `entry` to the file (once: a re-render of the same run does not add it again)."""
    machines = load(path)
    if not any(same_run(entry, m) for m in machines):
        machines.append(dict(entry))
    data = json.loads(path.read_text()) if path.exists() else {}
    data["machines"] = machines
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def record(out: Path, history: Path, entry: Mapping[str, Any]) -> Path:
    """Write `history` with `entry` added as `out`/performance_history.json, beside the report:
    the committed file changes only when `out` is docs/. Returns the file written."""
    kept = out / "performance_history.json"
    if history.exists() and not (kept.exists() and kept.samefile(history)):
        shutil.copyfile(history, kept)
    append(kept, entry)
    return kept


def table(history: Sequence[Mapping[str, Any]], this_run: Mapping[str, Any] | None,
          quick: bool) -> list[str]:
    """Markdown rows, one per machine, this run's last (marked)."""
    rows = [(m, False) for m in history if not (this_run and same_run(this_run, m))]
    if this_run:
        rows.append((this_run, True))
    lines = [
        "| CPU | ISA | cores | measured | size px | fp32 s/it | bf16 s/it | bf16/fp32 speed | "
        "fp32 step GFLOP/s | of TF's GEMM peak | of NumPy's GEMM peak | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry, mine in rows:
        speed = (entry["fp32_seconds"] / entry["bf16_seconds"]
                 if entry.get("fp32_seconds") and entry.get("bf16_seconds") else None)
        tf_share = (entry["fp32_gflops"] / entry["tf_fp32_peak_gflops"]
                    if entry.get("tf_fp32_peak_gflops") else None)
        np_share = (entry["fp32_gflops"] / entry["numpy_fp32_peak_gflops"]
                    if entry.get("numpy_fp32_peak_gflops") else None)
        when = entry.get("date") or "?"
        when = when[:10] + (f", TF {entry['tensorflow']}" if entry.get("tensorflow") else "")
        label = entry["cpu"] + (" — **this run**" + (" (QUICK: not real numbers)" if quick else "")
                                if mine else "")
        peak = entry.get("tf_fp32_peak_gflops")
        numpy = entry.get("numpy_fp32_peak_gflops")
        lines.append(
            f"| {label} | {isa_summary(entry.get('isa') or [])} | {entry.get('cores') or '?'} | "
            f"{when} | {entry['size']} | {fmt(entry.get('fp32_seconds'), '.3g')} | "
            f"{fmt(entry.get('bf16_seconds'), '.3g')} | {fmt(speed, '.2f')} | "
            f"{fmt(entry.get('fp32_gflops'), '.0f')} | "
            + (f"{tf_share:.0%} of {peak:.0f}" if tf_share is not None else "—") + " | "
            + (f"{np_share:.0%} of {numpy:.0f}" if np_share is not None else "not measured")
            + f" | {entry.get('note') or ''} |"
        )
    return lines
