"""What to measure and how long: `FULL` for docs/, `QUICK` to see that every benchmark runs."""

from __future__ import annotations

from dataclasses import dataclass

STYLE_LOSSES = ("gram", "mrf", "histogram", "sliced_wasserstein")


@dataclass(frozen=True)
class Plan:
    """Sizes are square px unless said; rounds are timed calls after one warm-up call."""

    name: str
    gemm_sizes: tuple[int, ...]  # n of the n×n×n float32 NumPy GEMMs: the machine's peak
    gemm_rounds: int
    step_sizes: tuple[int, ...]  # the step per size and precision (fp32, bf16)
    step_rounds: int
    headline_size: int  # the roofline target's size
    style_sizes: tuple[int, ...]  # each style term's step against Gram's
    style_rounds: int
    batch_sizes: tuple[int, ...]  # B images in one compiled step
    batch_members: tuple[int, ...]
    batch_rounds: int
    sweep_jobs: int  # a sweep of seeds, the plain launcher against nst_batched
    sweep_size: int
    sweep_iterations: int
    sweep_rounds: int  # plain and batched alternately, this many times each
    picture_sizes: tuple[int, ...]  # `run.py size=S` against today's default at S
    peer_size: int  # the PyTorch L-BFGS peer (with --peer)
    peer_iterations: int  # the peer's; its final loss is the bar
    peer_our_iterations: int  # ours, enough to pass the bar
    # `python scripts/run.py size=S` as it was at ce2e03a: 500 L-BFGS iterations, no stop.
    baseline: tuple[str, ...] = ("init=noise", "iterations=500", "converge.tolerance=0",
                                 "converge.change=0")
    # Overrides of every CLI run of the plan (QUICK: tiny runs, the offline weights).
    cli: tuple[str, ...] = ()


FULL = Plan(
    name="full",
    gemm_sizes=(1024, 1536, 2048),
    gemm_rounds=5,
    step_sizes=(256, 512, 1024),
    step_rounds=5,
    headline_size=512,
    style_sizes=(256, 512),
    style_rounds=5,
    batch_sizes=(128, 256, 512),
    batch_members=(1, 2, 4, 8),
    batch_rounds=3,
    sweep_jobs=4,
    sweep_size=128,
    sweep_iterations=50,
    sweep_rounds=2,
    picture_sizes=(256, 512),
    peer_size=256,
    peer_iterations=300,
    peer_our_iterations=450,
)

QUICK = Plan(
    name="quick",
    gemm_sizes=(256,),
    gemm_rounds=2,
    step_sizes=(32,),
    step_rounds=2,
    headline_size=32,
    style_sizes=(32,),
    style_rounds=1,
    batch_sizes=(32,),
    batch_members=(1, 2),
    batch_rounds=1,
    sweep_jobs=2,
    sweep_size=32,
    sweep_iterations=2,
    sweep_rounds=1,
    picture_sizes=(32,),
    peer_size=32,
    peer_iterations=3,
    peer_our_iterations=6,
    baseline=("init=noise", "iterations=4", "converge.tolerance=0", "converge.change=0"),
    cli=("+debug=tiny",),
)

PLANS = {plan.name: plan for plan in (FULL, QUICK)}
