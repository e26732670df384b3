"""What a run measured, read from pytest-benchmark's JSON: the tables' rows (ratios computed
here, never timed again) and issue 33's targets, each passed or failed on its measured ratio."""

from __future__ import annotations

import statistics
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .plan import PLANS

Data = Mapping[str, Any]  # pytest-benchmark's JSON, as loaded

PICTURE_SPEEDUP = 3.0  # the default picture against today's default, wall time
PICTURE_LOSS_GAP = 0.02  # its final total loss, relative to today's default's
PEER_SPEEDUP = {"fp32": 1.5, "bf16": 2.0}  # to the peer's final loss, sooner than the peer
SWEEP_NEVER_SLOWER = 1.0  # nst_batched against the plain sweep
SWEEP_PAYS = 1.25  # ... where the probe chose to batch
ROOFLINE_SHARE = 0.80  # the fp32 step's GFLOP/s against NumPy's GEMM peak
# Groups whose every benchmark holds both sides of its ratios (the others are ratios between
# benchmarks of one run: B against B = 1, a term against Gram, plain against batched), so one
# of them can be kept from an earlier run alone; and the steps, shares of the GEMM peak.
SELF_CONTAINED = ("picture", "peer")
ONE_UNIT = {"gemm": "step"}


@dataclass(frozen=True)
class Check:
    """One target: the measured value (a ratio, None when not measured) against its bar."""

    target: str
    measured: float | None
    bar: float
    at_most: bool = False  # the measured value must stay at or under the bar
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.measured is None:
            return None
        return self.measured <= self.bar if self.at_most else self.measured >= self.bar


def benchmarks(data: Data, group: str) -> Iterator[Mapping[str, Any]]:
    return (b for b in data["benchmarks"] if b["group"] == group)


def seconds(bench: Mapping[str, Any]) -> float:
    return bench["stats"]["median"]


def gflops(bench: Mapping[str, Any]) -> float:
    return bench["extra_info"]["flops"] / seconds(bench) / 1e9


def gemm_peak(data: Data) -> float | None:
    """NumPy's best float32 GEMM, GFLOP/s: a peak, so the fastest round of each size."""
    return max((b["extra_info"]["flops"] / b["stats"]["min"] / 1e9
                for b in benchmarks(data, "gemm")), default=None)


def step_rows(data: Data) -> list[dict[str, Any]]:
    peak = gemm_peak(data)
    return [{"size": b["extra_info"]["size"], "precision": b["extra_info"]["precision"],
             "s/it": seconds(b), "GFLOP/s": gflops(b),
             "of NumPy's GEMM peak": gflops(b) / peak if peak else None}
            for b in benchmarks(data, "step")]


def relative_rows(data: Data, group: str, key: str, base: Any, label: str
                  ) -> list[dict[str, Any]]:
    """Each benchmark of `group` by size and `key`, with the time of its size's `base` over
    its own (`label`): how many times as fast as the base."""
    found = list(benchmarks(data, group))
    bases = {b["extra_info"]["size"]: seconds(b) for b in found if b["extra_info"][key] == base}
    rows = []
    for b in found:
        info, base_seconds = b["extra_info"], bases.get(b["extra_info"]["size"])
        rows.append({"size": info["size"], key: info[key], "s/it": seconds(b),
                     label: base_seconds / seconds(b) if base_seconds else None})
    return rows


def style_rows(data: Data) -> list[dict[str, Any]]:
    """Each style term's step against Gram's at its size (× gram's time)."""
    rows = relative_rows(data, "style terms", "style_loss", "gram", "speed of gram's")
    for row in rows:
        speed = row.pop("speed of gram's")
        row["× gram's time"] = 1 / speed if speed else None
    return rows


def batch_rows(data: Data) -> list[dict[str, Any]]:
    """Images·iterations per second of B images in one step, and against B = 1."""
    rows = []
    for row, bench in zip(relative_rows(data, "batch", "batch", 1, "speed"),
                          benchmarks(data, "batch"), strict=True):
        members, single = row["batch"], row.pop("speed")
        rows.append({**row, "precision": bench["extra_info"]["precision"],
                     "images·it/s": members / row["s/it"],
                     "× B = 1": members * single if single else None})
    return rows


def picture_rows(data: Data) -> list[dict[str, Any]]:
    return [b["extra_info"] for b in benchmarks(data, "picture")]


def peer_rows(data: Data) -> list[dict[str, Any]]:
    """Ours per precision: when each reaches the peer's final loss, and how much sooner."""
    rows = []
    for b in benchmarks(data, "peer"):
        info = b["extra_info"]
        reached = info["reached_seconds"]
        rows.append({**info, "speedup": info["peer_seconds"] / reached if reached else None})
    return rows


def sweep_rows(data: Data) -> list[dict[str, Any]]:
    """Each launcher's median wall time over the rounds, and its command."""
    return [{"launcher": name, "wall s": statistics.median(walls),
             "rounds": len(walls), "largest batch": info["largest_batch"] if name != "plain"
             else 1, "command": f"`{info['commands'][name]}`"}
            for b in benchmarks(data, "sweep") for info in [b["extra_info"]]
            for name, walls in info["walls"].items()]


def sweep_speedup(data: Data) -> tuple[float | None, int]:
    """The plain sweep's wall time over nst_batched's; the largest batch nst_batched ran."""
    rows = {row["launcher"]: row for row in sweep_rows(data)}
    if {"plain", "nst_batched"} - set(rows):
        return None, 1
    batched = rows["nst_batched"]
    return rows["plain"]["wall s"] / batched["wall s"], batched["largest batch"]


def checks(data: Data) -> list[Check]:
    """Issue 33's targets on this run's measurements (one per size or precision measured)."""
    found = []
    for p in picture_rows(data):
        size = p["size"]
        found.append(Check(f"`run.py size={size}`: ≥ {PICTURE_SPEEDUP:g}× less wall time than "
                           "today's default", p["today_seconds"] / p["default_seconds"],
                           PICTURE_SPEEDUP, note=f"{p['today_seconds']:.0f} s → "
                           f"{p['default_seconds']:.0f} s"))
        found.append(Check(f"`run.py size={size}`: final total loss within "
                           f"{PICTURE_LOSS_GAP:.0%} of today's default's",
                           abs(p["default_total"] / p["today_total"] - 1), PICTURE_LOSS_GAP,
                           at_most=True, note=f"{p['today_total']:.4g} → {p['default_total']:.4g}"))
    for p in peer_rows(data):
        bar = PEER_SPEEDUP.get(p["precision"], PEER_SPEEDUP["fp32"])
        found.append(Check(f"the PyTorch peer's {p['peer_iterations']}-iteration loss, "
                           f"{p['precision']}: reached ≥ {bar:g}× sooner", p["speedup"], bar,
                           note="" if p["speedup"] else "not reached"))
    speedup, largest = sweep_speedup(data)
    if speedup is not None:
        bar = SWEEP_PAYS if largest > 1 else SWEEP_NEVER_SLOWER
        found.append(Check(f"`hydra/launcher=nst_batched` (batch_size=auto): ≥ {bar:g}× the "
                           "plain sweep's speed", speedup, bar,
                           note=f"batches of up to {largest}"))
    headline = PLANS[data["machine_info"]["plan"]].headline_size
    for row in step_rows(data):
        if (row["size"], row["precision"]) == (headline, "fp32"):
            found.append(Check(f"the {headline} px fp32 step: ≥ {ROOFLINE_SHARE:.0%} of NumPy's "
                               "fp32 GEMM peak", row["of NumPy's GEMM peak"], ROOFLINE_SHARE,
                               note=f"{row['GFLOP/s']:.0f} GFLOP/s"))
    return found


def headline(data: Data) -> dict[str, Any]:
    """This run's entry for the history of machines (docs/performance_history.json)."""
    machine, plan = data["machine_info"], PLANS[data["machine_info"]["plan"]]
    cpu = machine["cpu"]
    steps = {(r["size"], r["precision"]): r for r in step_rows(data)}
    fp32, bf16 = (steps.get((plan.headline_size, p), {}) for p in ("fp32", "bf16"))
    peer = {r["precision"]: r["speedup"] for r in peer_rows(data)}
    speedup, _ = sweep_speedup(data)
    batch4 = next((r["× B = 1"] for r in batch_rows(data) if (r["size"], r["batch"]) == (256, 4)),
                  None)
    return {"cpu": f"{cpu.get('brand_raw')} (family {cpu.get('family')} model "
                   f"{cpu.get('model')})", "isa": isa(cpu.get("flags", [])),
            "date": data["datetime"][:10], "tensorflow": machine.get("tensorflow"),
            "source": (data.get("commit_info") or {}).get("id", "")[:12],
            "size": plan.headline_size, "fp32_seconds": fp32.get("s/it"),
            "bf16_seconds": bf16.get("s/it"), "fp32_gflops": fp32.get("GFLOP/s"),
            "numpy_peak_gflops": gemm_peak(data), "peer_fp32": peer.get("fp32"),
            "peer_bf16": peer.get("bf16"), "batch4_256": batch4, "sweep_batched": speedup,
            "note": f"{command(machine)} ({plan.name} plan"
                    + (", the rest kept from earlier runs)" if data.get("kept") else ")")}


def with_run(history: Sequence[Mapping[str, Any]], data: Data) -> list[Mapping[str, Any]]:
    """The history of machines with this run's row; a merged run's row replaces those of the
    runs it kept benchmarks from."""
    this = headline(data)
    merged_from = {run["source"][:12] for run in data.get("kept", [])}
    return [*(h for h in history if h.get("cpu") != this["cpu"]
              or h.get("source") not in merged_from), this]


def command(machine: Mapping[str, Any]) -> str:
    """The command line that measured a run, as far as its JSON says."""
    keyword = machine.get("keyword")
    return "python scripts/bench.py" + (f' -k "{keyword}"' if keyword else "")


def merged(data: Data, earlier: Data) -> dict[str, Any]:
    """`data` with the benchmarks of `earlier` (a run on the same CPU) that it did not measure
    again: whole groups, so that every ratio stays within one run, and single pictures and peer
    runs. `kept` says which came from which run."""
    def unit(group: str) -> str:
        return ONE_UNIT.get(group, group)

    units = {unit(b["group"]) for b in data["benchmarks"]}
    names = {b["fullname"] for b in data["benchmarks"]}
    kept = [{"measured": earlier["datetime"], **b} for b in earlier["benchmarks"]
            if unit(b["group"]) not in units
            or (b["group"] in SELF_CONTAINED and b["fullname"] not in names)]
    runs = {**{r["datetime"]: r for r in earlier.get("kept", [])},
            earlier["datetime"]: {"datetime": earlier["datetime"],
                                  "command": command(earlier["machine_info"]),
                                  "source": (earlier.get("commit_info") or {}).get("id", "")}}
    used = {b["measured"] for b in kept}
    return {**data, "benchmarks": [*data["benchmarks"], *kept],
            "kept": [{**runs[d], "names": [b["fullname"] for b in kept if b["measured"] == d]}
                     for d in sorted(used)]}


def same_cpu(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Two py-cpuinfo descriptions of one kind of CPU."""
    keys = ("brand_raw", "family", "model", "count")
    return all(a.get(k) == b.get(k) for k in keys) and isa(a.get("flags", [])) == isa(
        b.get("flags", []))


def isa(flags: list[str]) -> str:
    """The flags that decide GEMM and convolution speed, as py-cpuinfo names them."""
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")
    return " ".join(flag for flag in wanted if flag in flags) or "—"
