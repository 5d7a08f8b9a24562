"""Backend health: consecutive episodes whose every LM call failed, and the pause they earn.

A failing backend (a server down, a quota hit) is not the task's fault: such episodes never count
against a task's attempts. After `backend_fail_after` of them in a row the daemon pauses, first for
`backend_pause_s`, doubling with every further failure up to `backend_pause_max_s`.
"""

from __future__ import annotations

from collections.abc import Callable

from insightloop.core.config import DaemonConfig


class BackendHealth:
    """The failure streak, the last backend error, and until when the daemon pauses for them."""

    def __init__(self, cfg: DaemonConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.clock = clock
        self.streak = 0
        self.until = 0.0
        self.error: str | None = None

    def failed(self, error: str) -> None:
        """One more episode lost to the backend; pauses once the streak is long enough."""
        self.streak += 1
        self.error = error
        if self.streak >= self.cfg.backend_fail_after:
            k = self.streak - self.cfg.backend_fail_after
            wait = min(self.cfg.backend_pause_max_s, self.cfg.backend_pause_s * 2 ** min(k, 20))
            self.until = self.clock() + wait

    def ok(self) -> None:
        """An episode reached the backend: the streak starts over."""
        self.streak = 0

    def paused(self, now: float) -> bool:
        return self.until > now
