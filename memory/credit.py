"""`CreditLedger`: what insights earned and what tasks score without them — credit, per-task stats, baselines.

An episode that had insights in its prompt credits each of them `reward − baseline`, overall and on
that task (`insight_task_stats`); the task itself is kept as a training problem with its vector, so
retrieval can find the problems nearest a new one. A baseline is a task's success rate without
insights, the reference the credit is measured against.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
from insightloop.core.task import Task
from insightloop.memory import db
from insightloop.memory.records import Insight, TaskStats
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors


def _accumulate(stats: Insight | TaskStats, delta: float, success: int) -> dict[str, Any]:
    """The statistics after one more use with credit `delta`."""
    return {
        "uses": stats.uses + 1,
        "utility_sum": stats.utility_sum + delta,
        "utility_sq": stats.utility_sq + delta * delta,
        "successes": stats.successes + success,
    }


def insert_task(
    conn: sqlite3.Connection, task_id: str, family: str | None, text: str, now: float, vec: np.ndarray | None
) -> int:
    """Keep a training problem unless one with this id is stored; returns the rows added (0 or 1)."""
    cur = conn.execute(
        "INSERT OR IGNORE INTO tasks (id, family, text, created, embedding) VALUES (?, ?, ?, ?, ?)",
        (task_id, family, text, now, db.vec_blob(vec)),
    )
    return cur.rowcount


class CreditLedger:
    """Credit, per-task statistics and baselines (see the module docstring)."""

    def __init__(self, session: Session, vectors: Vectors) -> None:
        self.session = session
        self.vectors = vectors

    def _register_task(self, task: Task) -> np.ndarray | None:
        """The task's vector if it is not yet stored as a training problem (embedded outside the
        write transaction, which should stay short)."""
        with self.session.read() as conn:
            known = conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task.id,)).fetchone()
        return None if known else self.vectors.one(task.prompt)

    def credit(
        self,
        insight_ids: list[str],
        task: Task,
        reward: float,
        baseline: float,
        episode_id: str | None = None,
    ) -> list[str]:
        """Add `reward − baseline` to each insight's statistics, overall and on this task; returns
        the ids credited (ids no longer in memory, e.g. after a rollback, are skipped)."""
        ids = list(dict.fromkeys(insight_ids))
        if not ids:
            return []
        delta = float(reward) - float(baseline)
        vec = self._register_task(task)
        with self.session.write("credit") as tx:
            if vec is not None:
                insert_task(tx.conn, task.id, task.family, task.prompt, tx.now, vec)
            done = [iid for iid in ids if _credit_one(tx, iid, task.id, reward >= 1.0, delta)]
            tx.payload = {
                "insight_ids": done,
                "task_id": task.id,
                "episode_id": episode_id,
                "reward": reward,
                "baseline": baseline,
                "delta": delta,
                "missing": [i for i in ids if i not in done],
            }
        return done

    def task_stats(self, insight_id: str) -> list[TaskStats]:
        """An insight's credit per task."""
        with self.session.read() as conn:
            rows = conn.execute(
                db.SELECT_STAT + " WHERE insight_id = ? ORDER BY task_id", (insight_id,)
            ).fetchall()
        return [db.stat_from_row(r) for r in rows]

    def set_baseline(self, task_id: str, rate: float, n: int) -> None:
        """The task's success rate without insights, from `n` samples."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a baseline rate is in [0, 1], got {rate}")
        with self.session.write("baseline") as tx:
            tx.conn.execute(
                "INSERT OR REPLACE INTO baselines (task_id, rate, n, updated) VALUES (?, ?, ?, ?)",
                (task_id, rate, n, tx.now),
            )
            tx.payload = {"task_id": task_id, "rate": rate, "n": n}

    def baseline(self, task_id: str) -> float | None:
        """The stored baseline success rate of a task, or None if never estimated."""
        info = self.baseline_info(task_id)
        return None if info is None else info[0]

    def baseline_info(self, task_id: str) -> tuple[float, int] | None:
        """(rate, samples) of the task's stored baseline, or None."""
        with self.session.read() as conn:
            row = conn.execute("SELECT rate, n FROM baselines WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else (float(row[0]), int(row[1]))


def _credit_one(tx: db.Tx, insight_id: str, task_id: str, success: bool, delta: float) -> bool:
    """Credit one insight, overall and on the task; False if the insight is gone."""
    ins = tx.get(insight_id)
    if ins is None:
        return False
    step = {"delta": delta, "success": int(success)}
    tx.put(ins.model_copy(update=_accumulate(ins, **step)))
    st = tx.stat(insight_id, task_id) or TaskStats(insight_id=insight_id, task_id=task_id)
    tx.put_stat(st.model_copy(update=_accumulate(st, **step)))
    return True
