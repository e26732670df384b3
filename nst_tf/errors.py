"""Users' mistakes: one exception type, and the one way they are reported."""

import sys
from typing import NoReturn


class UserError(Exception):
    """A mistake the user can fix: the message is one line naming the problem and the fix."""


def fail(message: str) -> NoReturn:
    """Report a user's mistake in one line and exit with code 2 (no traceback)."""
    print(f"nst-tf: error: {message}", file=sys.stderr)
    sys.exit(2)
