"""The benchmarks' options and shared fixtures (`scripts/bench.py` passes the options), and what
the machine description of pytest-benchmark (py-cpuinfo's) lacks: the load and TensorFlow."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .harness import Builder
from .plan import PLANS, STYLE_LOSSES, Plan

LOAD_AT_START = os.getloadavg()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nst-tf benchmark")
    group.addoption("--plan", choices=sorted(PLANS), default="quick", help="what to measure")
    group.addoption("--peer", metavar="PYTHON", help="a Python with torch: the PyTorch peer")
    group.addoption("--runs", type=Path, help="folder for the CLI runs (default: a temporary)")


def pytest_benchmark_update_machine_info(config: pytest.Config, machine_info: dict) -> None:
    import tensorflow as tf

    machine_info["loadavg_start"] = list(LOAD_AT_START)
    machine_info["loadavg_end"] = list(os.getloadavg())
    machine_info["usable_cores"] = len(os.sched_getaffinity(0))
    machine_info["tensorflow"] = tf.__version__
    machine_info["plan"] = config.getoption("--plan")
    machine_info["keyword"] = config.option.keyword  # -k: a part of the plan, or "" for all
    machine_info["unset"] = os.environ.get("NST_BENCH_UNSET", "")


def cases(plan: Plan) -> dict[str, tuple]:
    """Each benchmark argument's values under `plan`."""
    return {"gemm_n": plan.gemm_sizes, "step_size": plan.step_sizes,
            "precision": ("fp32", "bf16"), "style_loss": STYLE_LOSSES,
            "style_size": plan.style_sizes, "batch_size": plan.batch_sizes,
            "members": plan.batch_members, "launcher": ("plain", "nst_batched"),
            "picture_size": plan.picture_sizes, "ours": ("fp32", "auto")}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    plan = PLANS[metafunc.config.getoption("--plan")]
    for name, values in cases(plan).items():
        if name in metafunc.fixturenames:
            metafunc.parametrize(name, values)


@pytest.fixture(scope="session")
def plan(pytestconfig: pytest.Config) -> Plan:
    return PLANS[pytestconfig.getoption("--plan")]


@pytest.fixture(scope="session")
def builder() -> Builder:
    import nst_tf._tensorflow  # noqa: F401  (first, so TensorFlow's start-up noise is filtered)

    return Builder()


@pytest.fixture(scope="session")
def auto_precision(builder: Builder) -> str:
    return builder.auto_precision()


@pytest.fixture(scope="session")
def runs(pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = pytestconfig.getoption("--runs") or tmp_path_factory.mktemp("runs")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
