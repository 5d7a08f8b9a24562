"""The SQLite layer of the memory: connections, row conversion and the write transaction.

The schema and its version live in `memory.schema`; `connect` checks them on every open.

Every change runs inside `write(...)`: one `BEGIN IMMEDIATE` transaction that also appends an event
with the next version number. The event's JSON payload carries a summary plus a snapshot of every
insight row and per-task credit row the transaction wrote (None for a deleted row), so the state
of the insights at any version can be rebuilt from the events alone (diff, rollback). Inside a
`batch(...)` (a writer applying many changes at once) each change is a savepoint instead: it keeps
its own event and version, and all of them reach the disk with one commit.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from insightloop.memory import schema
from insightloop.memory.errors import MemoryAccessError
from insightloop.memory.records import Insight, TaskStats

BUSY_TIMEOUT_MS = 30_000
DB_NAME = "memory.sqlite"
_SAVEPOINT = "memory_write"

INSIGHT_COLUMNS = (
    "id",
    "text",
    "kind",
    "applies_when",
    "family",
    "status",
    "uses",
    "utility_sum",
    "utility_sq",
    "successes",
    "source_episodes",
    "source_tasks",
    "model",
    "created",
    "version",
    "absorbed",
    "meta",
    "solution",
)
_JSON_FIELDS = ("source_episodes", "source_tasks", "meta")
SELECT_INSIGHT = "SELECT " + ", ".join(INSIGHT_COLUMNS) + " FROM insights"
STAT_COLUMNS = ("insight_id", "task_id", "uses", "utility_sum", "utility_sq", "successes")
SELECT_STAT = "SELECT " + ", ".join(STAT_COLUMNS) + " FROM insight_task_stats"


def _sqlite(target: str, uri: bool) -> sqlite3.Connection:
    return sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False,
                           timeout=BUSY_TIMEOUT_MS / 1000)


def _is_access_error(err: sqlite3.Error) -> bool:
    """Refused by the file system (read-only, cannot create the -shm/-wal files), not by the content."""
    name = getattr(err, "sqlite_errorname", "")  # Python 3.11+; the message says the same
    return (isinstance(err, sqlite3.OperationalError)
            and (name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN"))
                 or any(s in str(err) for s in ("readonly database", "unable to open database file"))))


def _unwritable(path: Path) -> str | None:
    """Why a writer could not change the memory file, if it could not: the file or its directory (where
    SQLite keeps its -wal and -shm files) is read-only to this process, or on a read-only mount."""
    if path.exists() and not os.access(path, os.W_OK):
        return "the file is read-only"
    if not os.access(path.parent, os.W_OK):
        return "its directory is read-only"
    return None


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), busy timeout set, its schema
    checked and (writer) created or migrated; see `memory.schema`. A read-only connection opens the
    file with `mode=ro` and never creates it. A file the file system will not let SQLite read or
    write there (a read-only directory) raises `MemoryAccessError`."""
    if readonly:
        if not path.is_file():
            raise FileNotFoundError(f"no memory at {path}")
        target, uri = f"{path.resolve().as_uri()}?mode=ro", True
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MemoryAccessError(path, e.strerror or str(e), readonly) from e
        unwritable = _unwritable(path)
        if unwritable is not None:  # else SQLite opens it read-only without a word, and the first write fails
            raise MemoryAccessError(path, unwritable, readonly)
        target, uri = str(path), False
    try:
        conn = _sqlite(target, uri)
    except sqlite3.Error as e:
        if _is_access_error(e):
            raise MemoryAccessError(path, str(e), readonly) from e
        raise
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        schema.prepare(conn, path, readonly)
    except sqlite3.Error as e:
        conn.close()
        if _is_access_error(e):
            raise MemoryAccessError(path, str(e), readonly) from e
        raise
    except BaseException:
        conn.close()
        raise
    return conn


def insight_from_row(row: tuple[Any, ...]) -> Insight:
    """An insight from a row in `INSIGHT_COLUMNS` order (JSON columns decoded)."""
    data = dict(zip(INSIGHT_COLUMNS, row, strict=True))
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key])
    data["absorbed"] = bool(data["absorbed"])
    return Insight.model_validate(data)


def insight_params(ins: Insight) -> tuple[Any, ...]:
    """The column values of an insight in `INSIGHT_COLUMNS` order (JSON columns encoded)."""
    data = ins.model_dump(mode="json")
    for key in _JSON_FIELDS:
        data[key] = json.dumps(data[key])
    data["absorbed"] = int(data["absorbed"])
    return tuple(data[c] for c in INSIGHT_COLUMNS)


def stat_from_row(row: tuple[Any, ...]) -> TaskStats:
    """Per-task credit from a row in `STAT_COLUMNS` order."""
    return TaskStats.model_validate(dict(zip(STAT_COLUMNS, row, strict=True)))


def vec_blob(vec: np.ndarray | None) -> bytes | None:
    """A vector as stored (float32 bytes); None stays None."""
    return None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()


def blob_vec(blob: bytes | None, dim: int) -> np.ndarray | None:
    """The stored vector, or None when there is none or it has another dimension."""
    if blob is None or len(blob) != 4 * dim:
        return None
    return np.frombuffer(blob, dtype=np.float32)


class Tx:
    """An open write transaction at `version`; records snapshots of what it writes."""

    def __init__(self, conn: sqlite3.Connection, version: int, now: float, kind: str) -> None:
        self.conn = conn
        self.version = version
        self.now = now
        self.kind = kind
        self.payload: dict[str, Any] = {}
        self.rows: dict[str, dict[str, Any] | None] = {}
        self.stats: dict[tuple[str, str], dict[str, Any] | None] = {}

    def get(self, insight_id: str) -> Insight | None:
        row = self.conn.execute(SELECT_INSIGHT + " WHERE id = ?", (insight_id,)).fetchone()
        return insight_from_row(row) if row else None

    def put(
        self, ins: Insight, vec: np.ndarray | None = None, restamp: bool = True, n: int | None = None
    ) -> Insight:
        """Insert or update an insight (stamped with this version unless `restamp` is False, as
        when a rollback restores an old row). `vec` None keeps the stored embedding."""
        if restamp:
            ins = ins.model_copy(update={"version": self.version})
        cols = ("n",) + INSIGHT_COLUMNS + ("touched", "embedding")
        updates = ", ".join(f"{c} = excluded.{c}" for c in INSIGHT_COLUMNS[1:] + ("touched",))
        self.conn.execute(
            f"INSERT INTO insights ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT(id) DO UPDATE SET {updates}, "
            "embedding = COALESCE(excluded.embedding, insights.embedding)",
            (n, *insight_params(ins), self.version, vec_blob(vec)),
        )
        stored_n = self.conn.execute("SELECT n FROM insights WHERE id = ?", (ins.id,)).fetchone()[0]
        self.rows[ins.id] = {**ins.model_dump(mode="json"), "_n": stored_n}
        return ins

    def delete(self, insight_id: str) -> None:
        self.conn.execute("DELETE FROM insights WHERE id = ?", (insight_id,))
        self.rows[insight_id] = None

    def stat(self, insight_id: str, task_id: str) -> TaskStats | None:
        row = self.conn.execute(
            SELECT_STAT + " WHERE insight_id = ? AND task_id = ?", (insight_id, task_id)
        ).fetchone()
        return stat_from_row(row) if row else None

    def put_stat(self, st: TaskStats) -> None:
        self.conn.execute(
            "INSERT OR REPLACE INTO insight_task_stats (insight_id, task_id, uses, utility_sum, utility_sq, "
            "successes) VALUES (?, ?, ?, ?, ?, ?)",
            (st.insight_id, st.task_id, st.uses, st.utility_sum, st.utility_sq, st.successes),
        )
        self.stats[(st.insight_id, st.task_id)] = st.model_dump(mode="json")

    def delete_stat(self, insight_id: str, task_id: str) -> None:
        self.conn.execute(
            "DELETE FROM insight_task_stats WHERE insight_id = ? AND task_id = ?", (insight_id, task_id)
        )
        self.stats[(insight_id, task_id)] = None

    def event_payload(self) -> str:
        stats = [[i, t, row] for (i, t), row in self.stats.items()]
        return json.dumps({**self.payload, "rows": self.rows, "stats": stats})


def current_version(conn: sqlite3.Connection) -> int:
    """The number of the last committed event (0 for a memory with none)."""
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM events").fetchone()[0])


@contextmanager
def _transaction(conn: sqlite3.Connection, nested: bool) -> Iterator[None]:
    """A write transaction of its own, or (`nested`, inside an open batch) a savepoint that the batch
    commits: a failure then undoes this write alone and the batch decides what happens next."""
    conn.execute(f"SAVEPOINT {_SAVEPOINT}" if nested else "BEGIN IMMEDIATE")
    try:
        yield
        conn.execute(f"RELEASE {_SAVEPOINT}" if nested else "COMMIT")
    except BaseException:
        if nested and conn.in_transaction:
            conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            conn.execute(f"RELEASE {_SAVEPOINT}")
        elif conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def write(conn: sqlite3.Connection, kind: str, clock: Callable[[], float], nested: bool = False) -> Iterator[Tx]:
    """One write transaction plus its event. The version is taken inside the transaction, so two
    writers never hand out the same number. `nested`: inside a batch (`batch`), as a savepoint; the
    write still gets its own event and version, and reaches the disk with the batch's commit."""
    with _transaction(conn, nested):
        tx = Tx(conn, current_version(conn) + 1, clock(), kind)
        yield tx
        conn.execute(
            "INSERT INTO events (version, ts, kind, payload) VALUES (?, ?, ?, ?)",
            (tx.version, tx.now, tx.kind, tx.event_payload()),
        )


@contextmanager
def untracked(conn: sqlite3.Connection, nested: bool = False) -> Iterator[sqlite3.Connection]:
    """A write transaction without an event, for derived data (stored vectors), which is not a
    memory change and gets no version. `nested`: a savepoint inside a batch, as for `write`."""
    with _transaction(conn, nested):
        yield conn


@contextmanager
def batch(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One transaction around many writes (each `nested`): one commit, so one sync to disk, for all
    of them; any exception rolls every one of them back."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def read(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A read transaction: every query inside sees the same committed snapshot (inside an open
    transaction it simply joins it)."""
    if conn.in_transaction:
        yield conn
        return
    conn.execute("BEGIN")
    try:
        yield conn
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")
