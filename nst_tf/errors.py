"""Users' mistakes and faults they can fix: their exception types, and how they are reported."""

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


def fail(message: str, code: int = 2) -> NoReturn:
    """Report a user's mistake in one line and exit (code 2 unless told; no traceback)."""
    print(f"nst-tf: error: {message}", file=sys.stderr)
    sys.exit(code)
