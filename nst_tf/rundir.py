"""Run dirs: a run writes only into a dir no earlier run has written, and keeps its own record
of its settings there, which resume reads (Hydra's .hydra/ files are rewritten by every launch)."""

import atexit
import os
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from nst_tf.config import record
from nst_tf.errors import UserError
from nst_tf.files import discard, write_atomic

SETTINGS = "settings.yaml"
# What a run writes; any of these in a dir means an earlier run owns it.
RUN_FILES = (SETTINGS, "result.png", "losses.csv", "summary.json", "snapshots", "loss_curve.png",
             "frames", "result.mp4")
# What a sweep writes at its top, beside its jobs' dirs.
SWEEP_FILES = ("multirun.yaml", "sweep.csv", "figure.png", "figure.pdf")


def earlier_run_files(folder: Path) -> list[str]:
    """The files of an earlier run in `folder` (a crashed one's too), by name."""
    return [name for name in RUN_FILES if (folder / name).exists()]


def check_run_dir(folder: Path, key: str = "hydra.run.dir") -> None:
    """Refuse a dir an earlier run has written; `key` is the setting that chooses another."""
    found = earlier_run_files(folder)
    if not found:
        return
    earlier = f"output dir {folder} already holds an earlier run ({', '.join(found)})"
    if not any((folder / "snapshots").glob("iter_*.png")) and not any(
            (folder / "frames").glob("*.png")):  # a video continues from its frames
        raise UserError(f"{earlier}, with no snapshot to continue from; choose a new dir with "
                        f"{key}=...")
    raise UserError(f"{earlier}; continue it with {resume_override(folder)}, or choose a new dir "
                    f"with {key}=...")


def resume_override(run_dir: Path) -> str:
    """`resume=DIR` as it can be pasted into a shell and read by Hydra's override parser,
    whatever characters the path has."""
    path = str(run_dir)
    if re.fullmatch(r"[\w/.+:@~-]+", path, re.ASCII):
        return f"resume={path}"
    quote = '"' if '"' not in path else "'"
    return shlex.quote(f"resume={quote}{path}{quote}")


def check_sweep_dir(folder: Path) -> None:
    """Refuse a sweep dir an earlier sweep has written (its record or any job's files)."""
    found = [name for name in SWEEP_FILES if (folder / name).exists()]
    if folder.is_dir():
        found += sorted(f"{job.name}/" for job in folder.iterdir()
                        if job.is_dir() and (earlier_run_files(job) or (job / ".hydra").is_dir()))
    if found:
        raise UserError(
            f"sweep dir {folder} already holds an earlier sweep ({', '.join(found[:4])}"
            f"{', ...' if len(found) > 4 else ''}); choose a new dir with hydra.sweep.dir=..."
        )


def write_settings(folder: Path, settings: Any) -> None:
    """The run's own record of its settings (a RunConfig), written whole or not at all."""
    text = yaml.safe_dump(record(settings), sort_keys=False, allow_unicode=True)
    write_atomic(folder / SETTINGS, text.encode())


CLAIM = ".nst-tf-claim"  # the process writing into a dir now: its pid
_claimed: list[Path] = []  # this process's claims, let go at exit


def claim_dir(folder: Path, key: str = "hydra.run.dir") -> Path | None:
    """Claim `folder` for this process before anything is written in it, atomically (O_EXCL):
    of two runs started together, the second is refused while the first lives. Returns the
    claim made (None: this process held it already); `release` lets it go."""
    def unwritable(error: OSError) -> UserError:
        return UserError(f"cannot write {folder} ({error.strerror}); choose a writable dir with "
                         f"{key}=...")

    try:
        folder.mkdir(parents=True, exist_ok=True)  # a file in the way: FileExistsError
    except OSError as error:
        raise unwritable(error) from None
    path = folder / CLAIM
    for _ in range(3):  # a dead process's claim is taken over
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _holder(path)
            if holder == os.getpid():
                return None
            if holder is not None and _alive(holder):
                raise UserError(f"output dir {folder} is being written by another run (process "
                                f"{holder}) right now; choose a new dir with {key}=...") from None
            try:
                path.unlink(missing_ok=True)
            except OSError as error:  # a read-only dir: said as such, not as a raw error
                raise unwritable(error) from None
            continue
        except OSError as error:
            raise unwritable(error) from None
        with os.fdopen(fd, "w") as file:
            file.write(str(os.getpid()))
        _claimed.append(path)
        return path
    raise UserError(f"output dir {folder} is being claimed by other runs at once; choose a new "
                    f"dir with {key}=...")


def release(claim: Path | None) -> None:
    if claim is not None and claim in _claimed:
        _claimed.remove(claim)
        # Left behind on a dir that became read-only: harmless, a dead holder's claim is taken
        # over, and an error here (at exit, too) would hide the run's own.
        discard(claim)


@atexit.register
def _release_all() -> None:
    for claim in list(_claimed):
        release(claim)


def _holder(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None  # half-written by a process that died, or taken away: not a live holder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True

