"""Print sizes in tiles: peak memory and seconds per iteration against size, the whole image at
once and tile by tile (`tile=N`, nst_tf.tiling), and the tiling's overhead where both fit.

Each point is a fresh process (peak RSS is a process's high-water mark): it builds the compiled
step through the session as a run does (tracing it and taking one step), then times `--steps`
more L-BFGS iterations. The content is the Tübingen photo at SIZE px on its long side (4:3), the
style The Starry Night at the same size. A whole image is only tried where the memory check's
estimate fits in what the machine has; a tiled one only where the image is larger than a tile.

    PYTHONPATH=. python scripts/tiling_memory.py --sizes 1024 1536 2048 3072 4096 --tile 1024

Writes every number to `--json` and prints a Markdown table. Run it alone: the seconds are
only comparable with nothing else running.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


def probe(size: int, tile: int | None, steps: int, history: int, precision: str
          ) -> dict[str, Any]:
    """In this process: build, step, and report peak RSS and seconds."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from bench.harness import Builder, load_images, members, peak_rss, settings_for

    import nst_tf._tensorflow  # noqa: F401  (first: TensorFlow's start-up noise filtered)

    settings = settings_for([f"precision={precision}", f"optimizer.history_size={history}"])
    content, style = load_images(settings, size, square=False)
    builder = Builder()
    builder.extractor(settings)
    model = peak_rss()
    started = time.perf_counter()
    from nst_tf.session import SESSION

    transfer = SESSION.build(settings, builder.weights, content.shape[:2], tile=tile)
    transfer.start_batch(members(settings, content, style, 1))
    built = time.perf_counter() - started
    seconds = []
    for _ in range(steps):
        began = time.perf_counter()
        transfer.step_values()
        seconds.append(time.perf_counter() - began)
    return {"size": size, "shape": list(content.shape[:2]), "tile": tile,
            "tiles": len(transfer.tiled.tiles) if transfer.tiled else 1,
            "peak_rss": peak_rss(), "model_rss": model, "build_seconds": built,
            "step_seconds": seconds, "seconds_per_iteration": statistics.median(seconds)}


def machine() -> dict[str, Any]:
    info = {"platform": platform.platform(), "cores": os.cpu_count()}
    try:
        cpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in cpu.splitlines()
                           if line.startswith("Model name"))
        flags = next(line for line in cpu.splitlines() if line.startswith("Flags"))
        info["isa"] = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16")
                       if f" {f}" in flags]
        info["family_model"] = [line.split(":", 1)[1].strip() for line in cpu.splitlines()
                                if line.startswith(("CPU family", "Model:"))]
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 1536, 2048, 3072, 4096])
    parser.add_argument("--tile", type=int, default=1024, help="tile=N for the tiled runs")
    parser.add_argument("--steps", type=int, default=2, help="timed iterations after the build")
    parser.add_argument("--history", type=int, default=20, help="optimizer.history_size")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--json", type=Path, default=ROOT / "docs" / "tiling.json")
    parser.add_argument("probe", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe:  # the child: SIZE TILE (0: whole)
        size, tile = map(int, args.probe)
        print(json.dumps(probe(size, tile or None, args.steps, args.history, args.precision)))
        return

    from nst_tf.memory import Parts, available_bytes, estimate_peak, tiled_peak

    started, points = time.perf_counter(), []
    available, parts = available_bytes(), Parts.of("lbfgs", args.history)
    for size in args.sizes:
        width, height = size, size * 3 // 4
        whole = estimate_peak(width * height, width * height, parts)
        tiled = tiled_peak((width, height), args.tile, parts)
        for tile, estimate in ((0, whole), (args.tile, tiled)):
            if (tile and args.tile >= size) or (available and estimate > available):
                points.append({"size": size, "tile": tile or None, "estimate": estimate,
                               "skipped": "does not fit" if estimate > (available or 0)
                               else "one tile"})
                continue
            command = [sys.executable, __file__, "--steps", str(args.steps), "--history",
                       str(args.history), "--precision", args.precision, str(size), str(tile)]
            print(f"{size} px, {'tile ' + str(tile) if tile else 'whole'} ...", file=sys.stderr,
                  flush=True)
            done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                                  check=False)
            if done.returncode != 0:
                points.append({"size": size, "tile": tile or None, "estimate": estimate,
                               "failed": done.stderr[-1500:]})
                print(done.stderr[-1500:], file=sys.stderr)
                continue
            point = json.loads(done.stdout.strip().splitlines()[-1])
            point.update(estimate=estimate, load_average=os.getloadavg()[0])
            points.append(point)
            print(f"  peak {point['peak_rss'] / GIB:.2f} GiB (estimate {estimate / GIB:.2f}), "
                  f"{point['seconds_per_iteration']:.1f} s/it, {point['tiles']} tiles",
                  file=sys.stderr, flush=True)
    ratios = {}
    for size in args.sizes:
        ran = {p["tile"]: p for p in points if p["size"] == size and "peak_rss" in p}
        if None in ran and args.tile in ran:
            ratios[size] = (ran[args.tile]["seconds_per_iteration"]
                            / ran[None]["seconds_per_iteration"])
    record = {"command": " ".join(["python", *sys.argv]), "machine": machine(),
              "settings": {k: str(v) for k, v in vars(args).items() if k != "probe"},
              "available_bytes": available, "points": points,
              "overhead_tiled_over_whole": ratios,
              "minutes": (time.perf_counter() - started) / 60}
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    print("| size (px) | computed | tiles | peak RSS (GiB) | estimate (GiB) | s/iteration | "
          "build + 1st step (s) |\n|---|---|---|---|---|---|---|")
    for p in points:
        how = f"tile={p['tile']}" if p["tile"] else "whole"
        shape = f"{p['size']}x{p['size'] * 3 // 4}"
        if "peak_rss" not in p:
            print(f"| {shape} | {how} | | {p.get('skipped') or 'failed'} | "
                  f"{p['estimate'] / GIB:.1f} | | |")
            continue
        print(f"| {shape} | {how} | {p['tiles']} | {p['peak_rss'] / GIB:.2f} | "
              f"{p['estimate'] / GIB:.1f} | {p['seconds_per_iteration']:.1f} | "
              f"{p['build_seconds']:.0f} |")
    for size, ratio in ratios.items():
        print(f"\noverhead at {size} px: tiled / whole = {ratio:.2f}x")
    print(f"\n{record['minutes']:.1f} min; wrote {args.json}")


if __name__ == "__main__":
    main()
