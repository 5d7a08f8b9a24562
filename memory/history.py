"""`History`: the memory's versions — the event log, diffs, rollback, and moving memories between runs.

Every change is an event with a version number (see `memory.db`); `memory.versions` rebuilds the
insights at any version from the events. A rollback restores the insights and their per-task credit
exactly as they were and is itself a new event, so it can be undone by another rollback. Export and
import (JSON lines) are in `memory.transfer`.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
from insightloop.core.config import MemoryConfig
from insightloop.memory import db, transfer, versions
from insightloop.memory.indexes import Indexes
from insightloop.memory.records import ImportReport, Insight, MemoryDiff, MemoryEvent, TaskStats
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors


class History:
    """Versions, diffs, rollback, export and import of one memory (see the module docstring)."""

    def __init__(
        self, session: Session, vectors: Vectors, indexes: Indexes, cfg: MemoryConfig, run_dir: Path
    ) -> None:
        self.session = session
        self.vectors = vectors
        self.indexes = indexes
        self.cfg = cfg
        self.run_dir = run_dir

    def events(self, since_version: int = 0) -> list[MemoryEvent]:
        """Committed events after `since_version`, oldest first (row snapshots left out)."""
        with self.session.read() as conn:
            return versions.list_events(conn, since_version)

    def diff(self, v1: int, v2: int) -> MemoryDiff:
        """Insights added, removed and changed from version v1 to v2."""
        with self.session.read() as conn:
            _check_version(conn, v1, v2)
            return versions.diff(conn, v1, v2)

    def rollback(self, version: int) -> int:
        """Restore the insights and their per-task credit exactly as they were at `version`.
        Attempts, episodes and baselines are observations and stay. The rollback is itself a new
        event (so it can be undone by another rollback); returns the new version."""
        with self.session.lock:
            with self.session.read() as conn:
                current = _check_version(conn, version)
                target, target_stats = versions.state_at(conn, version)
                now = {r[0]: r[1] for r in conn.execute("SELECT id, text FROM insights")}
            # Texts that differ from the stored ones need their vectors again (outside the write).
            need = [i for i, row in target.items() if now.get(i) != row["text"]]
            vecs = dict(zip(need, self.vectors.embed([target[i]["text"] for i in need]), strict=True))
            with self.session.write("rollback") as tx:
                _restore_insights(tx, target, vecs)
                _restore_stats(tx, target_stats)
                tx.payload = {"to": version, "from": current, "restored": len(tx.rows)}
                return tx.version

    def export_jsonl(self, path: str | Path) -> int:
        """Write the memory as JSON lines (see `memory.transfer`); returns the lines written."""
        return transfer.export_jsonl(self.session, self.run_dir, Path(path))

    def import_jsonl(self, path: str | Path) -> ImportReport:
        """Merge a JSON-lines export into this memory in one transaction (see `memory.transfer`)."""
        return transfer.import_jsonl(
            transfer.Target(self.session, self.vectors, self.indexes, self.cfg), Path(path)
        )


def _check_version(conn: sqlite3.Connection, *wanted: int) -> int:
    """The current version; ValueError naming it when a wanted version does not exist."""
    current = db.current_version(conn)
    for v in wanted:
        if not 0 <= v <= current:
            raise ValueError(f"version {v} does not exist (the memory is at v{current})")
    return current


def _restore_insights(tx: db.Tx, target: versions.Rows, vecs: dict[str, np.ndarray]) -> None:
    """Delete the insights added since, and put back every row that differs from the target."""
    stored = {
        ins.id: ins for ins in (db.insight_from_row(r) for r in tx.conn.execute(db.SELECT_INSIGHT))
    }
    for insight_id in set(stored) - set(target):
        tx.delete(insight_id)
    for insight_id, row in target.items():
        ins = Insight.model_validate({k: v for k, v in row.items() if not k.startswith("_")})
        if stored.get(insight_id) != ins:
            tx.put(ins, vecs.get(insight_id), restamp=False, n=row.get("_n"))


def _restore_stats(tx: db.Tx, target: versions.StatRows) -> None:
    """Delete the per-task credit rows added since, and put back every row that differs."""
    stored = {(st.insight_id, st.task_id): st for st in map(db.stat_from_row, tx.conn.execute(db.SELECT_STAT))}
    for key in set(stored) - set(target):
        tx.delete_stat(*key)
    for key, row in target.items():
        st = TaskStats.model_validate(row)
        if stored.get(key) != st:
            tx.put_stat(st)
