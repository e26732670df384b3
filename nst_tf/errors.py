"""Users' mistakes and faults they can fix: their exception types, and how they are reported."""

import logging
import sys
from pathlib import Path
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix: the message is one line naming the problem and the fix."""


class WriteError(UserError):
    """A file could not be written; whoever knows which setting places it words the fix."""

    def __init__(self, path: Path | str, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(f"cannot write {path} ({reason})")


def say(line: str, level: int = logging.WARNING) -> None:
    """One line for the user on stderr, also kept in the run's log file (Hydra's job log) when
    there is one; not sent to the log's console handler, which would show it twice."""
    print(f"nst-tf: {line}", file=sys.stderr)
    record = logging.getLogger("nst_tf").makeRecord("nst_tf", level, "", 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def warn(message: str) -> None:
    say(f"warning: {message}")


def fail(message: str, code: int = 2) -> NoReturn:
    """Report a user's mistake in one line and exit (code 2 unless told; no traceback)."""
    say(f"error: {message}", logging.ERROR)
    sys.exit(code)
