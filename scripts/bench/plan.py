"""What to measure and how long: `FULL` for docs/, `QUICK` for smoke tests; the issue's targets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

# The targets (checked in the report, never in timed tests).
TARGET_ROOFLINE_SHARE = 0.80
TARGET_BF16_SPEEDUP = 3.5
TARGET_CLI_SECONDS = 300.0
TARGET_SWEEP_OVERHEAD = 0.10
TARGET_QUALITY_GAP = 0.03
TARGET_C2F_SPEEDUP = 2.0  # reach the direct run's loss at the full size this much sooner
TARGET_PEER_SPEEDUP = 1.5  # reach the PyTorch peer's loss this much sooner
TARGET_BATCH_SPEEDUP = 1.25  # images·iterations/s of B = 4 against B = 1 at 256 px
TARGET_BATCH_SIZE, TARGET_BATCH_MEMBERS = 256, 4
TARGET_BATCH_SWEEP_SPEEDUP = 1.5  # the Fig. 3 grid with hydra/launcher=nst_batched, sooner

# A precision setting of the plan that the run resolves: the faster of fp32 and bf16 in its own
# step-time table (as `precision=auto` would pick), so a CPU with slow bf16 is not run in bf16.
FASTEST = "fastest"


@dataclass(frozen=True)
class Plan:
    """What to measure and how long."""

    name: str
    step_sizes: tuple[int, ...]  # square sizes (px) of the s/it table
    step_repeats: Mapping[int, int]  # timed steps per size, jit_compile off
    jit_repeats: Mapping[int, int]  # timed steps per size with jit_compile on; absent: skipped
    matmul_sizes: tuple[int, ...]  # n of the n×n×n GEMMs that measure TensorFlow's peak
    matmul_repeats: int
    numpy_sizes: tuple[int, ...]  # n of the float32 GEMMs that measure NumPy's peak
    eager_size: int
    eager_steps: int
    memory_sizes: tuple[int, ...]
    memory_steps: int
    sweep_jobs: int
    sweep_size: int
    sweep_iterations: int
    cli_size: int  # the 500-iteration run; its loss curve is also L-BFGS's time to quality
    cli_iterations: int
    cli_precision: str  # fp32, bf16 or FASTEST
    adam_iterations: int  # Adam's run that sets the time-to-quality target
    c2f_scales: tuple[int, ...]  # coarse to fine against a direct run at the last size
    c2f_iterations: int  # at the full size, in both runs
    c2f_coarse_iterations: tuple[int, ...]  # at each coarser scale (`scale_iterations`)
    c2f_precision: str  # fp32: the reference objective
    peer_size: int  # the PyTorch L-BFGS peer (only with --peer): the same objective and start
    peer_iterations: int  # the peer's run; its final loss is the bar
    peer_our_iterations: int  # ours, long enough to pass the bar
    quality_size: int
    quality_iterations: int
    determinism_iterations: int
    tune_size: int
    tune_precision: str  # fp32, bf16 or FASTEST
    tune_iterations: int
    tune_histories: tuple[int, ...]
    tune_line_searches: tuple[str, ...]
    tune_adam_rates: tuple[float, ...]
    batch_sizes: tuple[int, ...]  # square sizes (px) of the batch throughput table
    batch_members: tuple[int, ...]  # B, images per compiled step
    batch_repeats: Mapping[int, int]  # timed steps per size, after one warm-up
    batch_sweep_size: int  # the Fig. 3 grid, sequential against batched
    batch_sweep_iterations: int
    batch_memory_size: int  # peak RSS per B at this square size, a subprocess each
    batch_memory_members: tuple[int, ...]
    batch_auto_sizes: tuple[int, ...]  # batch_size=auto's choice against the measured fit
    precisions: tuple[str, ...] = ("fp32", "bf16")
    # Overrides that cut the Fig. 3 grid (rows x columns) to batch_sweep_jobs; none: all 20.
    batch_sweep_grid: tuple[str, ...] = ()
    batch_sweep_jobs: int = 20

    @property
    def headline_size(self) -> int:
        """The size of the headline figures: 512 px, or the largest measured."""
        return 512 if 512 in self.step_sizes else self.step_sizes[-1]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """A plan read back from performance.json; a key an older run lacks takes FULL's value."""
        known = {f.name for f in fields(cls)}
        return cls(**{**{k: getattr(FULL, k) for k in known},
                      **{k: v for k, v in data.items() if k in known}})


FULL = Plan(
    name="full",
    step_sizes=(256, 512, 1024),
    step_repeats={256: 10, 512: 5, 1024: 3},
    jit_repeats={256: 2, 512: 1, 1024: 1},
    matmul_sizes=(1024, 2048, 4096),
    matmul_repeats=5,
    numpy_sizes=(1024, 1536, 2048),
    eager_size=512,
    eager_steps=3,
    memory_sizes=(256, 512, 768, 1024),
    memory_steps=2,
    sweep_jobs=8,
    sweep_size=128,
    sweep_iterations=50,
    cli_size=512,
    cli_iterations=500,
    cli_precision=FASTEST,
    adam_iterations=1000,
    c2f_scales=(256, 512),
    c2f_iterations=500,
    c2f_coarse_iterations=(100,),
    c2f_precision="fp32",
    peer_size=256,
    peer_iterations=300,
    peer_our_iterations=450,
    quality_size=256,
    quality_iterations=500,
    determinism_iterations=50,
    tune_size=256,
    tune_precision=FASTEST,
    tune_iterations=300,
    tune_histories=(10, 20, 50, 100),
    tune_line_searches=("none", "strong_wolfe"),
    tune_adam_rates=(2.0, 5.0, 10.0, 20.0, 50.0),
    batch_sizes=(128, 256, 512),
    batch_members=(1, 2, 4, 8),
    batch_repeats={128: 10, 256: 6, 512: 3},
    batch_sweep_size=128,
    batch_sweep_iterations=50,
    batch_memory_size=256,
    batch_memory_members=(1, 2, 4, 8),
    batch_auto_sizes=(256, 512),
)

QUICK = Plan(
    name="quick",
    step_sizes=(32, 48, 64),
    step_repeats={32: 2, 48: 2, 64: 2},
    jit_repeats={32: 1},  # XLA compiles take seconds even at tiny sizes
    matmul_sizes=(256, 512),
    matmul_repeats=2,
    numpy_sizes=(256, 512),
    eager_size=64,
    eager_steps=2,
    memory_sizes=(64, 128),
    memory_steps=1,
    sweep_jobs=2,
    sweep_size=32,
    sweep_iterations=5,
    cli_size=64,
    cli_iterations=10,
    cli_precision=FASTEST,
    adam_iterations=20,
    c2f_scales=(32, 64),
    c2f_iterations=10,
    c2f_coarse_iterations=(5,),
    c2f_precision="fp32",
    peer_size=32,
    peer_iterations=5,
    peer_our_iterations=10,
    quality_size=64,
    quality_iterations=10,
    determinism_iterations=5,
    tune_size=48,
    tune_precision=FASTEST,
    tune_iterations=8,
    tune_histories=(5, 100),
    tune_line_searches=("none", "strong_wolfe"),
    tune_adam_rates=(5.0, 10.0),
    batch_sizes=(32,),
    batch_members=(1, 2),
    batch_repeats={32: 2},
    batch_sweep_size=32,
    batch_sweep_iterations=3,
    batch_sweep_grid=("style_layers=[conv1_1],[conv1_1,conv2_1]", "alpha=1e-3,1e-2"),
    batch_sweep_jobs=4,
    batch_memory_size=64,
    batch_memory_members=(1, 2),
    batch_auto_sizes=(256, 512),
)
