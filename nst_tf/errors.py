"""The one exception type for users' mistakes."""


class UserError(Exception):
    """A mistake the user can fix: the message is one line naming the problem and the fix."""
