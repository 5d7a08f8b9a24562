"""A failed run: the backend failed every call, so the run measured nothing (exit code 1).

A backend that turns failed calls into error generations (`core.lm.Tallied`: the litellm backend)
counts them. When every call of a run failed, the run is reported as failed — its error in the
report and in `--json`, `error: ...` on stderr, exit code 1 — never as an accuracy of zero.
"""

from __future__ import annotations

from insightloop.core.config import ModelConfig
from insightloop.core.errors import UserError
from insightloop.core.lm import LM, Tallied

SHOWN_ERROR_CHARS = 300  # a server's error text can run to pages; the line keeps its head


class RunFailed(UserError):
    """Every backend call of the run failed; its message says what the backend answered."""

    exit_code = 1


def run_failure(lm: LM, cfg: ModelConfig) -> str | None:
    """Why the run failed, or None when some backend call succeeded (or none was counted)."""
    tally = lm.tally if isinstance(lm, Tallied) else None
    if tally is None or not tally.all_failed:
        return None
    last = " ".join((tally.last_error or "no error text").split())
    if len(last) > SHOWN_ERROR_CHARS:
        last = last[: SHOWN_ERROR_CHARS - 1] + "…"
    server = f"the server at {cfg.api_base}" if cfg.api_base else "the model's provider"
    return (f"the run failed: every backend call failed ({tally.failed} of {tally.calls}; last: {last}); "
            f"nothing was measured. Check that {server} is up and serves {cfg.model!r}, then run again")
