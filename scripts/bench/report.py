"""PERFORMANCE.md rendered from a run's pytest-benchmark JSON (tables by tabulate, the machine
as py-cpuinfo describes it), its figures drawn from the same data, and the history of machines
beside it."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tabulate import tabulate

from . import checks
from .checks import Data

COMMAND = "python scripts/bench.py --out docs --peer /tmp/torchvenv/bin/python"
TORCH_VENV = ("python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy "
              "pillow")
HISTORY_COLUMNS = {"cpu": "CPU", "isa": "ISA", "date": "measured", "size": "px",
                   "fp32_seconds": "fp32 s/it", "bf16_seconds": "bf16 s/it",
                   "fp32_gflops": "fp32 GFLOP/s", "numpy_peak_gflops": "NumPy GEMM GFLOP/s",
                   "peer_fp32": "× peer, fp32", "peer_bf16": "× peer, bf16",
                   "batch4_256": "B = 4 × B = 1 at 256 px", "sweep_batched": "batched sweep ×",
                   "note": "note"}
VERDICT = {True: "pass", False: "**fail**", None: "not measured"}
STATIC = """\
## How it is measured

Timings are pytest-benchmark's: each benchmark in `scripts/bench/bench_*.py` takes one untimed
warm-up call (after the step's compile), then its rounds; the tables give the median (the GEMM
peak: the fastest round). Compare runs with `pytest-benchmark --storage outputs/bench/storage
compare --group-by=group` (every run is saved there, by machine). FLOPs are analytic: the
convolutions up to the deepest layer forward and input-gradient backward, and the Gram matrices
(`harness.vgg_flops`). Seconds of the CLI runs are wall time of a `scripts/run.py` process,
start to finish; the peer's are loop time.

What the earlier benchmark also measured and this one leaves out, still true where it was
measured (git history of `docs/PERFORMANCE.md` before issue 34): XLA (`jit_compile=true`) took
6–12× the plain graph's time on CPUs; the compiled step is 1.75× faster than eager; peak memory
is linear in pixels (`docs/TILING.md` and `scripts/tiling_memory.py` measure it per size);
L-BFGS with history 50 and no line search stays the fastest preset to a given loss.
"""


def table(rows: Sequence[Mapping[str, Any]], floatfmt: str | Sequence[str] = ".3g") -> str:
    if not rows:
        return "Not measured in this run."
    return tabulate(rows, headers="keys", tablefmt="github", floatfmt=floatfmt,
                    missingval="—")


def machine(data: Data) -> str:
    info = data["machine_info"]
    cpu = info["cpu"]
    rows = [{"": "CPU", "value": f"{cpu.get('brand_raw')}, {cpu.get('vendor_id_raw')} family "
                                 f"{cpu.get('family')} model {cpu.get('model')}, "
                                 f"{cpu.get('hz_advertised_friendly')}"},
            {"": "ISA", "value": checks.isa(cpu.get("flags", []))},
            {"": "cores", "value": f"{cpu.get('count')} ({info.get('usable_cores')} usable)"},
            {"": "caches", "value": f"L2 {cpu.get('l2_cache_size', 0) / 2**20:g} MiB, L3 "
                                    f"{cpu.get('l3_cache_size', 0) / 2**20:g} MiB"},
            {"": "software", "value": f"Python {info['python_version']}, TensorFlow "
                                      f"{info.get('tensorflow')}, {info['system']} "
                                      f"{info['release']}"},
            {"": "load average (1/5/15 min)",
             "value": f"{_load(info.get('loadavg_start'))} at the start, "
                      f"{_load(info.get('loadavg_end'))} at the end"},
            {"": "source", "value": (data.get("commit_info") or {}).get("id", "?")[:12]
                + (" + changes" if (data.get("commit_info") or {}).get("dirty") else "")}]
    if info.get("unset"):
        rows.append({"": "unset for NumPy's peak", "value": info["unset"]})
    return table(rows)


def _load(values: Sequence[float] | None) -> str:
    return "/".join(f"{v:.2f}" for v in values) if values else "?"


def targets(data: Data) -> str:
    rows = [{"target": c.target, "measured": c.measured, "bar": f"{'≤' if c.at_most else '≥'} "
             f"{c.bar:g}", "result": VERDICT[c.passed], "note": c.note}
            for c in checks.checks(data)]
    return table(rows, ".2f")


def render(data: Data, history: Sequence[Mapping[str, Any]], figures: Sequence[str]) -> str:
    """The whole report, from the data alone."""
    info = data["machine_info"]
    quick = info["plan"] != "full"
    steps = checks.step_rows(data)
    for row in steps:
        row["of NumPy's GEMM peak"] = _percent(row["of NumPy's GEMM peak"])
    gemm = [{"n": b["extra_info"]["n"], "best GFLOP/s": b["extra_info"]["flops"]
             / b["stats"]["min"] / 1e9, "median GFLOP/s": checks.gflops(b),
             "BLAS": b["extra_info"]["blas"]} for b in checks.benchmarks(data, "gemm")]
    pictures = [{"size": p["size"], "today s": p["today_seconds"],
                 "today its": p["today_iterations"], "today loss": p["today_total"],
                 "default s": p["default_seconds"], "default its": p["default_iterations"],
                 "default loss": p["default_total"],
                 "mean abs Δpixel": p["mean_abs_pixel_difference"]}
                for p in checks.picture_rows(data)]
    peer = checks.peer_rows(data)
    peer_table = [{"run": "PyTorch peer (torch " + p["torch"] + ")", "to the bar s":
                   p["peer_seconds"], "iteration": p["peer_iterations"], "sooner": None}
                  for p in peer[:1]]
    peer_table += [{"run": f"ours, {p['precision']}", "to the bar s": p["reached_seconds"],
                    "iteration": p["reached_iteration"], "sooner": p["speedup"]} for p in peer]
    this = checks.headline(data)
    parts = [
        "# Performance",
        f"Regenerate on an otherwise idle machine with one command: `{COMMAND}` (the peer's "
        f"venv: `{TORCH_VENV}`; without `--peer` its rows are left out). `--quick` checks "
        "that every benchmark runs, at tiny sizes, in minutes; `-k EXPR` measures a part (pytest's "
        "-k), and `--merge docs/benchmark.json` keeps the earlier run's other benchmarks of this "
        "CPU in the report (whole groups: a ratio never spans two runs).",
        ("**QUICK run: tiny sizes, not real numbers.** " if quick else "")
        + f"Measured {data['datetime'][:19]} by `{checks.command(info)}` ({info['plan']} "
        f"plan){_kept(data)}, on the machine below; the data is `benchmark.json` "
        "(pytest-benchmark's). Another machine gives other numbers: the history at the end "
        "shows how far apart.",
        machine(data),
        "## Targets (issue 33)", targets(data),
        "## The step against the GEMM peak",
        "NumPy's float32 GEMM (n×n×n), the machine's peak:", table(gemm, ".0f"),
        "The compiled step (`StyleTransfer`, default L-BFGS preset and layers) on a square "
        "crop of the default content:", table(steps, ("g", "", ".3f", ".0f")),
        "## Style terms against Gram",
        "Each `style_loss`'s step at size×size (its preset's layers), its time over Gram's:",
        table(checks.style_rows(data), ("g", "", ".3f", ".2f")),
        "## Batches",
        "B images in one compiled step in the precision `precision=auto` uses here:",
        table(checks.batch_rows(data), ("g", "g", ".3f", "", ".2f", ".2f")),
        "A sweep of seeds under the plain launcher and under `hydra/launcher=nst_batched` "
        "(`batch_size=auto`: batches only where its probe found that they pay), alternately; "
        "the median wall time of the rounds:",
        table(checks.sweep_rows(data), ("", ".1f", "g", "g", "")),
        "## Time to the default picture",
        "`python scripts/run.py size=S` (the default now) after today's default "
        f"(`{' '.join(_baseline(data))}`), wall time start to finish; the mean absolute "
        "difference of their pictures, of 255:",
        table(pictures, ("g", ".1f", "g", ".4g", ".1f", "g", ".4g", ".1f")),
        *(f"![today's default (left) and the default (right)]({name})" for name in figures
          if name.startswith("perf_picture")),
        "## Time to quality against the PyTorch L-BFGS peer",
        ("`scripts/peer_torch.py` (`torch.optim.LBFGS`) on our inputs (`scripts/peer_setup.py`),"
         f" the bar its final loss, {peer[0]['bar']:.4g}, on the fp32 objective (a bf16 run's "
         "images re-scored with it); loop seconds, no compile:\n\n" + table(peer_table, ".3g")
         if peer else f"Not measured in this run: add `--peer PYTHON` (`{TORCH_VENV}`)."),
        *(f"![loss against time]({name})" for name in figures if name == "perf_peer.jpg"),
        "## Machines",
        "Headline figures of full runs, each on its own CPU (`docs/performance_history.json`; "
        f"a full run adds itself), size {this['size']} px; compare a row with its own CPU:",
        table([{header: entry.get(key) for key, header in HISTORY_COLUMNS.items()}
               for entry in [*(h for h in history if h != this), this]], ".3g"),
        STATIC,
    ]
    return "\n\n".join(parts).rstrip() + "\n"


def _kept(data: Data) -> str:
    """Where the numbers come from: this run, or also earlier runs kept by --merge."""
    if not data.get("kept"):
        return ", every number in one run"
    earlier = "; ".join(
        f"{', '.join(name.split('::')[-1] for name in run['names'])} from {run['datetime'][:19]} "
        f"(`{run['command']}`, source {run['source'][:12]})" for run in data["kept"])
    return (f"; kept from earlier runs on this CPU (`--merge`): {earlier}. Every ratio is "
            "within one run")


def _percent(share: float | None) -> str | None:
    return f"{share:.0%}" if share is not None else None


def _baseline(data: Data) -> list[str]:
    from .plan import PLANS

    return ["python scripts/run.py size=S", *PLANS[data["machine_info"]["plan"]].baseline]


def write(data: Data, out: Path, history: Sequence[Mapping[str, Any]]) -> list[str]:
    """PERFORMANCE.md and its figures into `out`; returns the figures' names."""
    from .figures import peer_curves, side_by_side

    figures = []
    for p in checks.picture_rows(data):
        name = f"perf_picture_{p['size']}.jpg"
        if Path(p["today_image"]).exists():  # the runs are gone when re-rendered later
            side_by_side(out / name, [Path(p["today_image"]), Path(p["default_image"])])
        if (out / name).exists():
            figures.append(name)
    if (peer := checks.peer_rows(data)):
        peer_curves(out / "perf_peer.jpg", peer)
        figures.append("perf_peer.jpg")
    (out / "PERFORMANCE.md").write_text(render(data, history, figures))
    return figures


def load_history(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["machines"] if path.exists() else []
