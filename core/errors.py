"""The project's known errors: what a user did or must fix, said in one line.

Every error a user can cause (a bad config, a malformed task file, a missing model package, refused
credentials, a damaged run directory) derives from `UserError`. The CLI's one error boundary turns
any of them into its message on stderr and `exit_code` (2: bad input or configuration; 3: another
daemon holds the run directory; 1: a failed run, whose backend failed every call), never a
traceback. Anything else is a bug or a systemic fault and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A known error whose message says what was wrong and how to fix it."""

    exit_code = 2
