"""In-process timings: NumPy's float32 GEMM (the machine's peak the step is measured against),
the real compiled step (default L-BFGS preset) per size and precision, and each style term's
step against Gram's. Each records its analytic FLOPs in `extra_info`; the report divides."""

from __future__ import annotations

import gc

import numpy as np

from .harness import vgg_flops

GRAM_TERMS = ("gram", "histogram")  # the style terms that compute Gram matrices (config.py)


def test_numpy_gemm(benchmark, plan, gemm_n: int) -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((gemm_n, gemm_n), dtype=np.float32) for _ in range(2))
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    benchmark.group = "gemm"
    benchmark.extra_info.update(n=gemm_n, flops=2.0 * gemm_n**3, numpy=np.__version__,
                                blas=f"{blas.get('name')} {blas.get('version')}")
    benchmark.pedantic(np.matmul, args=(a, b), rounds=plan.gemm_rounds, warmup_rounds=1)


def timed_step(benchmark, builder, overrides: list[str], size: int, rounds: int,
               batch: int = 1) -> None:
    """Time `rounds` steps after one warm-up; its size, batch and FLOPs in `extra_info`."""
    settings, transfer = builder.started(overrides, size, batch)
    grams = settings.style_layers if settings.style_loss.name.value in GRAM_TERMS else ()
    flops = vgg_flops(transfer.extractor, grams, *transfer.shape)
    benchmark.extra_info.update(size=size, batch=batch, flops=batch * flops,
                                compile_seconds=transfer.compile_seconds,
                                overrides=" ".join(overrides))
    benchmark.pedantic(transfer.step_values, rounds=rounds, warmup_rounds=1)
    del transfer
    gc.collect()  # a dropped step holds image-sized buffers (the L-BFGS history)


def test_step(benchmark, plan, builder, step_size: int, precision: str) -> None:
    benchmark.group = "step"
    benchmark.extra_info["precision"] = precision
    timed_step(benchmark, builder, [f"precision={precision}"], step_size, plan.step_rounds)


def test_style_term(benchmark, plan, builder, style_size: int, style_loss: str) -> None:
    benchmark.group = "style terms"
    benchmark.extra_info["style_loss"] = style_loss
    timed_step(benchmark, builder, [f"style_loss={style_loss}"], style_size, plan.style_rounds)
