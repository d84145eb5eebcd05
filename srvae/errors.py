"""The one base of every error that the user fixes, not the code.

A bad config, an unknown model, a missing or corrupt data file, a diverged run, an incomplete run's results, a
full disk, a busy lock: each such error derives from :class:`UserError` (and keeps its ordinary base, such as
``ValueError`` or ``OSError``, for callers that catch that). The ``srvae`` command prints a user error as one
line naming the problem and the fix, and exits with status 2; any other exception is a bug and keeps its
traceback.
"""


class UserError(Exception):
    """Something the user must fix: a bad input or circumstance; the message names the problem and the fix."""
