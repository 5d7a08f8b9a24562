"""Self-practice: what the daemon works on when the inbox is empty.

Problems come from `cfg.daemon.practice_suites`, keyed `suite:task_id`. Sampling is biased towards
problems the policy keeps failing; a problem solved `mastery_streak` times in a row is retired.
The per-problem statistics live in daemon.sqlite (`practice`), so they survive restarts.
"""

from __future__ import annotations

import random
import sqlite3

from insightloop.core.task import Task
from insightloop.evals.suites import load_suite


class Practice:
    """Self-practice problems with failure-biased sampling; mastered problems are left out."""

    def __init__(self, con: sqlite3.Connection, tasks: list[tuple[str, Task]], rng: random.Random,
                 streak: int) -> None:
        self.con = con
        self.tasks = tasks
        self.rng = rng
        self.streak = streak

    def pick(self) -> tuple[str, Task] | None:
        stats = {k: (a, s, st) for k, a, s, st in
                 self.con.execute("SELECT key, attempts, successes, streak FROM practice")}
        pool, weights = [], []
        for key, task in self.tasks:
            a, s, st = stats.get(key, (0, 0, 0))
            if st >= self.streak:
                continue
            pool.append((key, task))
            weights.append((a - s + 1) / (a + 2))  # posterior failure rate, Beta(1, 1) prior
        return self.rng.choices(pool, weights=weights, k=1)[0] if pool else None

    def record(self, key: str, correct: bool, now: float) -> None:
        self.con.execute(
            "INSERT INTO practice(key, attempts, successes, streak, last) VALUES (?, 1, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, "
            "successes = successes + excluded.successes, "
            "streak = CASE WHEN excluded.successes = 1 THEN streak + 1 ELSE 0 END, last = excluded.last",
            (key, int(correct), int(correct), now))


def load_practice(names: list[str], limit: int | None, seed: int) -> list[tuple[str, Task]]:
    """Practice problems from the configured suites, keyed `suite:task_id`."""
    return [(f"{name}:{t.id}", t) for name in names for t in load_suite(name, limit=limit, seed=seed)]
