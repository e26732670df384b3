"""A sweep's records: each job's config, overrides and status as its files say, sweep.csv,
and how the sweep ended (its tally and exit code)."""

import csv
import io
import json
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nst_tf.errors import UserError
from nst_tf.files import read_yaml, write_atomic
from nst_tf.sweep.overrides import parse_override

TABLE_NAME = "sweep.csv"
TABLE_COLUMNS = ("job", "overrides", "status", "reason", "exit_code")  # then the final losses
# Each status and its exit code when summary.json gives none (an older app's Ctrl-C: SIGINT).
_EXIT_CODES = {"ok": 0, "failed": 1, "diverged": 3, "interrupted": 130, "skipped": 130}
SHOWN_STATUSES = ("ok", "interrupted")  # statuses whose cell shows the job's result.png
NO_RECORD = "no summary.json: the job ended without a record (killed?)"


@dataclass
class SweepJob:
    """One job of a sweep, as its files describe it."""

    dir: Path
    config: dict[str, Any]  # resolved (summary.json), else as Hydra saved it
    overrides: dict[str, Any]  # override key without its +/~ prefix -> parsed value
    task_overrides: list[str]  # as given, e.g. "alpha=1e-3"
    summary: dict[str, Any]  # {} when the job wrote none, or it cannot be read
    status: str  # ok, failed, diverged, interrupted or skipped
    reason: str | None  # one line; None when ok
    exit_code: int

    @property
    def result(self) -> Path | None:
        """result.png; for a video, its last frame."""
        path = self.dir / "result.png"
        if not path.is_file():
            frames = sorted((self.dir / "frames").glob("*.png"))
            path = frames[-1] if frames else path
        return path if path.is_file() else None

    @property
    def shown(self) -> Path | None:
        """The image the figure shows: none for a job that failed, diverged or was skipped."""
        return self.result if self.status in SHOWN_STATUSES else None

    @property
    def final(self) -> dict[str, Any]:
        """The last step's iteration, seconds and losses; {} if no step ran."""
        final = self.summary.get("final")
        return final if isinstance(final, dict) else {}


def read_sweep(sweep_dir: Path) -> list[SweepJob]:
    """Every Hydra job under `sweep_dir` (a dir holding .hydra/config.yaml), in job order."""
    if not sweep_dir.is_dir():
        raise UserError(
            f"sweep dir {sweep_dir} not found; give the dir a multirun wrote (its hydra.sweep.dir)"
        )
    job_dirs = [saved.parent.parent for saved in sweep_dir.glob("**/.hydra/config.yaml")]
    if not job_dirs:
        raise UserError(
            f"no Hydra jobs in {sweep_dir}; give the dir a multirun wrote (its hydra.sweep.dir)"
        )
    job_dirs.sort(key=lambda job_dir: (_job_number(job_dir), _natural_key(str(job_dir))))
    return [_read_job(job_dir) for job_dir in job_dirs]


def write_sweep_table(sweep_dir: Path, jobs: Sequence[SweepJob]) -> Path:
    """SWEEP_DIR/sweep.csv: per job its overrides, status, reason, exit code and final losses."""
    # The final values' names come from the jobs: the objective's terms are configurable.
    final = dict.fromkeys(["iteration", "seconds", *(k for job in jobs for k in job.final)])
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=[*TABLE_COLUMNS, *final], lineterminator="\n")
    writer.writeheader()
    for job in jobs:
        writer.writerow({
            "job": job.dir.relative_to(sweep_dir).as_posix(),
            "overrides": " ".join(job.task_overrides),
            "status": job.status,
            "reason": job.reason,
            "exit_code": job.exit_code,
            **{key: job.final.get(key) for key in final},  # None is written blank
        })
    path = sweep_dir / TABLE_NAME
    write_atomic(path, text.getvalue().encode())  # never a half-written table
    return path


def sweep_tally(jobs: Sequence[SweepJob]) -> str:
    """How the jobs ended, e.g. '3 jobs, 2 ok, 1 failed'."""
    counts = Counter(job.status for job in jobs)
    parts = [f"{counts[status]} {status}" for status in _EXIT_CODES if counts[status]]
    return ", ".join([f"{len(jobs)} job{'' if len(jobs) == 1 else 's'}", *parts])


def sweep_exit_code(jobs: Sequence[SweepJob]) -> int:
    """0 when every job is ok; a stopped sweep's code (e.g. 143 for SIGTERM); else 1."""
    for job in jobs:
        if job.status in ("interrupted", "skipped"):
            return job.exit_code
    return 0 if all(job.status == "ok" for job in jobs) else 1


def _natural_key(text: str) -> list[object]:
    # "job 10" after "job 9"
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def hydra_setting(job_dir: Path, key: str) -> Any:
    """A setting of the job's Hydra config (.hydra/hydra.yaml), e.g. "hydra.job.num"; None
    where the file or the key is missing or the file is damaged."""
    try:
        node = read_yaml(job_dir / ".hydra" / "hydra.yaml")
    except Exception:  # YAML's and the file system's errors have no common base
        return None
    for name in key.split("."):
        node = node.get(name) if isinstance(node, dict) else None
    return node


def _job_number(job_dir: Path) -> float:
    number = hydra_setting(job_dir, "hydra.job.num")
    # A missing or damaged file only costs the order: fall back to names.
    return number if isinstance(number, int) else math.inf


def _read_job(job_dir: Path) -> SweepJob:
    try:
        summary = json.loads((job_dir / "summary.json").read_text())
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except FileNotFoundError:
        summary, outcome = {}, ("failed", NO_RECORD, 1)
    except (OSError, ValueError) as error:
        summary, outcome = {}, ("failed", f"summary.json unreadable: {error}", 1)
    else:
        outcome = _outcome(summary)
    config = summary.get("config")
    if not isinstance(config, dict):
        config = read_yaml(job_dir / ".hydra" / "config.yaml") or {}
    lines: list[str] = []
    listed = job_dir / ".hydra" / "overrides.yaml"
    if listed.is_file():
        lines = [str(x) for x in read_yaml(listed) or []]
    overrides = dict(map(parse_override, lines))
    status, reason, exit_code = outcome
    return SweepJob(dir=job_dir, config=config, overrides=overrides, task_overrides=lines,
                    summary=summary, status=status, reason=reason, exit_code=exit_code)


def _outcome(summary: dict[str, Any]) -> tuple[str, str | None, int]:
    """(status, reason, exit code) as a job's summary.json records them."""
    status = summary.get("status")
    if status is None:  # written before jobs recorded a status: finished, or stopped by Ctrl-C
        status = "interrupted" if summary.get("interrupted") else "ok"
    elif status not in _EXIT_CODES:
        return "failed", f"unknown status {status!r} in summary.json", 1
    reason = summary.get("reason")
    code = summary.get("exit_code")
    if not isinstance(code, int) or (code == 0) != (status == "ok"):
        code = _EXIT_CODES[status]  # never let a failed job pass for ok, or the reverse
    return status, None if reason is None else " ".join(str(reason).split()), code
