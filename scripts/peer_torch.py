"""The PyTorch L-BFGS peer for the speed comparison in docs/PERFORMANCE.md.

Runs with another interpreter, in a throwaway venv that has torch (the project never imports
or depends on torch):

    python -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch numpy pillow
    /tmp/torchvenv/bin/python scripts/peer_torch.py --setup setup.npz --out peer.csv

It optimises exactly our objective: the same images and sizes (the style keeps its own aspect
ratio), VGG19 with average pooling and the same weights (our converted offline copy), the same
BGR mean subtraction, the paper's loss scaling (½Σ(F−P)² at conv4_2, 1/(4N²M²)Σ(G−A)² at
conv1_1 ... conv5_1 with w = 1/5), α = 1e-3, β = 1, the same white-noise start, with
torch.optim.LBFGS (fixed step lr 1, as ours; tolerances 0 so every iteration runs). The setup
file (images, noise, weights path) comes from `scripts/peer_setup.py`, run in our venv.
"""

import argparse
import csv
import time

import numpy as np
import torch
import torch.nn.functional as F

BLOCKS = (2, 2, 4, 4, 4)
STYLE = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT = "conv4_2"
MEAN_BGR = torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)


def vgg_features(weights: dict[str, np.ndarray], deepest: str):
    layers = []
    for block, convs in enumerate(BLOCKS, 1):
        for conv in range(1, convs + 1):
            key = f"block{block}_conv{conv}"
            kernel = torch.from_numpy(weights[f"{key}/kernel"]).permute(3, 2, 0, 1).contiguous()
            bias = torch.from_numpy(weights[f"{key}/bias"])
            layers.append((f"conv{block}_{conv}", kernel, bias))
        layers.append(("pool", None, None))

    def run(image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = image.flip(1) - MEAN_BGR  # RGB -> BGR, minus the mean pixel
        out = {}
        for name, kernel, bias in layers:
            if name == "pool":
                x = F.avg_pool2d(x, 2)
                continue
            x = F.relu(F.conv2d(x, kernel, bias, padding=1))
            out[name] = x
            if name == deepest:
                break
        return out

    return run


def gram(f: torch.Tensor) -> torch.Tensor:
    flat = f.reshape(f.shape[1], -1)
    return flat @ flat.T


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--history", type=int, default=100)
    parser.add_argument("--threads", type=int, default=0, help="0: torch's default")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    setup = np.load(args.setup)
    weights = dict(np.load(str(setup["weights"])))
    features = vgg_features(weights, "conv5_1")

    def tensor(a: np.ndarray) -> torch.Tensor:
        image = torch.from_numpy(np.ascontiguousarray(a, np.float32)).permute(2, 0, 1)
        return image[None].contiguous()  # L-BFGS views the gradient flat

    content, style, init = (tensor(setup[k]) for k in ("content", "style", "init"))
    with torch.no_grad():
        p = features(content)[CONTENT]
        targets = {name: gram(f) for name, f in features(style).items() if name in STYLE}
    image = init.clone().requires_grad_(True)

    def objective() -> tuple[torch.Tensor, float, float]:
        f = features(image)
        c = 0.5 * ((f[CONTENT] - p) ** 2).sum()
        s = sum(0.2 * ((gram(f[n]) - targets[n]) ** 2).sum()
                / (4.0 * f[n].shape[1] ** 2 * (f[n].shape[2] * f[n].shape[3]) ** 2)
                for n in STYLE)
        return 1e-3 * c + s, c.item(), s.item()

    optimizer = torch.optim.LBFGS([image], lr=1, max_iter=1, history_size=args.history,
                                  tolerance_grad=0, tolerance_change=0)
    rows, started = [], time.perf_counter()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        total, c, s = objective()
        total.backward()
        closure.values = (float(total), c, s)
        return total

    for iteration in range(args.iterations):
        optimizer.step(closure)
        rows.append((iteration, time.perf_counter() - started, *closure.values))
    with torch.no_grad():
        total, c, s = objective()
    rows.append((args.iterations, time.perf_counter() - started, float(total), c, s))
    with open(args.out, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["iteration", "seconds", "total", "content", "style"])
        writer.writerows(rows)
    print(f"{args.iterations} iterations in {rows[-1][1]:.1f} s: total {rows[-1][2]:.4g}")


if __name__ == "__main__":
    main()
