"""`Attempts`: verified attempts kept for contrast, found again by the similarity of their task.

A later failure with no correct sibling in its own search tree is contrasted with the stored
attempt whose task text is most similar. The same attempt (same id, or same text for the same task)
is stored once.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import numpy as np
from insightloop.memory import db
from insightloop.memory.indexes import Indexes
from insightloop.memory.records import Attempt
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors

ATTEMPT_COLUMNS = ("id", "task_id", "task_text", "family", "text", "reward", "created")
SELECT_ATTEMPT = "SELECT " + ", ".join(ATTEMPT_COLUMNS) + " FROM attempts"


def attempt_from_row(row: tuple[Any, ...]) -> Attempt:
    """An attempt from a row in `ATTEMPT_COLUMNS` order."""
    return Attempt.model_validate(dict(zip(ATTEMPT_COLUMNS, row, strict=True)))


def stored_like(conn: sqlite3.Connection, attempt: Attempt) -> str | None:
    """The id of a stored attempt with this id, or this text for the same task."""
    row = conn.execute(
        "SELECT id FROM attempts WHERE id = ? OR (task_id = ? AND text = ?)",
        (attempt.id, attempt.task_id, attempt.text),
    ).fetchone()
    return None if row is None else str(row[0])


def insert_attempt(conn: sqlite3.Connection, attempt: Attempt, vec: np.ndarray | None) -> None:
    """Insert an attempt with the vector of its task text."""
    a = attempt
    conn.execute(
        f"INSERT INTO attempts ({', '.join(ATTEMPT_COLUMNS)}, embedding) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (a.id, a.task_id, a.task_text, a.family, a.text, a.reward, a.created, db.vec_blob(vec)),
    )


class Attempts:
    """Storing and finding verified attempts (see the module docstring)."""

    def __init__(self, session: Session, vectors: Vectors, indexes: Indexes) -> None:
        self.session = session
        self.vectors = vectors
        self.indexes = indexes

    def add(self, attempt: Attempt) -> Attempt:
        """Keep a verified attempt (indexed by its task text); the stored record is returned."""
        with self.session.read() as conn:
            known = stored_like(conn, attempt)
        if known is not None:
            return self.get(known)
        vec = self.vectors.one(attempt.task_text)
        with self.session.write("attempt") as tx:
            insert_attempt(tx.conn, attempt, vec)
            tx.payload = {"id": attempt.id, "task_id": attempt.task_id, "reward": attempt.reward}
        return attempt

    def get(self, attempt_id: str) -> Attempt:
        """The attempt with this id; KeyError if there is none."""
        with self.session.read() as conn:
            row = conn.execute(SELECT_ATTEMPT + " WHERE id = ?", (attempt_id,)).fetchone()
        if row is None:
            raise KeyError(f"no attempt {attempt_id!r}")
        return attempt_from_row(row)

    def list_attempts(self, task_id: str | None = None, limit: int | None = None) -> list[Attempt]:
        """Stored attempts (of one task when given), newest first."""
        sql = SELECT_ATTEMPT
        args: list[Any] = []
        if task_id is not None:
            sql += " WHERE task_id = ?"
            args.append(task_id)
        sql += " ORDER BY n DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        with self.session.read() as conn:
            return [attempt_from_row(r) for r in conn.execute(sql, args)]

    def similar(self, text: str, k: int = 1, family: str | None = None) -> list[tuple[Attempt, float]]:
        """Stored attempts whose task text is most similar to `text` (a task prompt), best first."""
        if k <= 0:
            return []
        q = self.vectors.embed([text])
        with self.session.lock:
            catalog = self.indexes.ensure().attempts
            total = len(catalog.index)
            # With a family filter some hits are dropped: fetch more, and more again if too few remain.
            fetch = k if family is None else max(8 * k, 64)
            while True:
                keyed = catalog.search(q, fetch)
                found = self._by_id([key for key, _ in keyed])
                hits = [
                    (found[key], score)
                    for key, score in keyed
                    if key in found and (family is None or found[key].family == family)
                ]
                if len(hits) >= k or fetch >= total:
                    return hits[:k]
                fetch *= 4

    def _by_id(self, ids: list[str]) -> dict[str, Attempt]:
        if not ids:
            return {}
        with self.session.read() as conn:
            marks = ",".join("?" * len(ids))
            rows = conn.execute(SELECT_ATTEMPT + f" WHERE id IN ({marks})", ids).fetchall()
        return {r[0]: attempt_from_row(r) for r in rows}
