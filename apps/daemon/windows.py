"""Sliding-window spend caps: rollouts and tokens per hour, dollars and seconds per day.

Every episode's spend is a row of the `spend` table in daemon.sqlite, so the caps hold across
restarts. `blocked` says which cap is reached and when it frees up; `episode_budget` gives the next
episode whatever is left in every window.
"""

from __future__ import annotations

import sqlite3

from insightloop.apps.daemon.status import CapUse
from insightloop.core.budget import Budget
from insightloop.core.config import DaemonConfig

# metric (a column of `spend`) -> (window name, window length in seconds, the DaemonConfig cap field)
CAPS: dict[str, tuple[str, float, str]] = {
    "rollouts": ("hour", 3600.0, "rollouts_per_hour"),
    "tokens": ("hour", 3600.0, "tokens_per_hour"),
    "usd": ("day", 86400.0, "usd_per_day"),
    "seconds": ("day", 86400.0, "seconds_per_day"),
}


class SpendWindows:
    """Sliding-window spend (rollouts/tokens per hour, usd/seconds per day) kept in daemon.sqlite."""

    def __init__(self, con: sqlite3.Connection, cfg: DaemonConfig) -> None:
        self.con = con
        self.cfg = cfg

    def cap(self, metric: str) -> float | None:
        return getattr(self.cfg, CAPS[metric][2])

    def _rows(self, metric: str, now: float) -> list[tuple[float, float]]:
        since = now - CAPS[metric][1]
        sql = f"SELECT ts, {metric} FROM spend WHERE ts > ? ORDER BY ts"  # metric is one of CAPS' keys
        return self.con.execute(sql, (since,)).fetchall()

    def usage(self, now: float) -> dict[str, CapUse]:
        out: dict[str, CapUse] = {}
        for metric, (window, _, _) in CAPS.items():
            used = float(sum(v for _, v in self._rows(metric, now)))
            cap = self.cap(metric)
            out[metric] = CapUse(window=window, used=used, cap=cap,
                                 left=None if cap is None else max(0.0, cap - used))
        return out

    def blocked(self, now: float) -> tuple[str, float] | None:
        """(which cap, when it frees up) for the first cap reached, else None."""
        for metric, (window, span, _) in CAPS.items():
            cap = self.cap(metric)
            if cap is None:
                continue
            rows = self._rows(metric, now)
            used = sum(v for _, v in rows)
            if used < cap:
                continue
            for ts, v in rows:  # the cap frees once enough of the oldest spend leaves the window
                used -= v
                if used < cap:
                    return f"{metric}/{window} cap ({self.cap_text(metric)})", ts + span
        return None

    def cap_text(self, metric: str) -> str:
        cap = self.cap(metric)
        return f"{cap:g}" if cap is not None else "none"

    def episode_budget(self, now: float) -> Budget:
        """A budget holding what is left in every window (None = uncapped)."""
        use = self.usage(now)
        left = {m: u.left for m, u in use.items()}
        return Budget(
            max_rollouts=None if left["rollouts"] is None else int(left["rollouts"]),
            max_tokens=None if left["tokens"] is None else int(left["tokens"]),
            max_usd=left["usd"],
            max_seconds=left["seconds"],
        )

    def record(self, now: float, budget: Budget) -> None:
        self.con.execute("INSERT INTO spend(ts, rollouts, tokens, usd, seconds) VALUES (?,?,?,?,?)",
                         (now, budget.rollouts, budget.tokens, budget.usd, budget.seconds))

    def prune(self, now: float) -> None:
        self.con.execute("DELETE FROM spend WHERE ts < ?", (now - 2 * 86400.0,))
