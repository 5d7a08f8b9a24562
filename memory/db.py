"""SQLite layer of the memory store: schema, connections, row conversion and the write transaction.

Every change runs inside `write(...)`: one `BEGIN IMMEDIATE` transaction that also appends an event
with the next version number. The event's JSON payload carries a summary plus a snapshot of every
insight row and per-task credit row the transaction wrote (None for a deleted row), so the state
of the insights at any version can be rebuilt from the events alone (diff, rollback).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from insightloop.memory.records import Insight, TaskStats

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS insights (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    text TEXT NOT NULL,
    kind TEXT NOT NULL,
    applies_when TEXT NOT NULL,
    family TEXT,
    status TEXT NOT NULL,
    uses INTEGER NOT NULL,
    utility_sum REAL NOT NULL,
    utility_sq REAL NOT NULL,
    successes INTEGER NOT NULL,
    source_episodes TEXT NOT NULL,
    source_tasks TEXT NOT NULL,
    model TEXT NOT NULL,
    created REAL NOT NULL,
    version INTEGER NOT NULL,
    absorbed INTEGER NOT NULL,
    meta TEXT NOT NULL,
    touched INTEGER NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS insights_status ON insights(status);
CREATE INDEX IF NOT EXISTS insights_touched ON insights(touched);
CREATE TABLE IF NOT EXISTS insight_task_stats (
    insight_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    uses INTEGER NOT NULL,
    utility_sum REAL NOT NULL,
    utility_sq REAL NOT NULL,
    successes INTEGER NOT NULL,
    PRIMARY KEY (insight_id, task_id)
);
CREATE INDEX IF NOT EXISTS insight_task_stats_task ON insight_task_stats(task_id);
CREATE TABLE IF NOT EXISTS tasks (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    family TEXT,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    embedding BLOB
);
CREATE TABLE IF NOT EXISTS attempts (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    task_text TEXT NOT NULL,
    family TEXT,
    text TEXT NOT NULL,
    reward REAL NOT NULL,
    created REAL NOT NULL,
    embedding BLOB
);
CREATE INDEX IF NOT EXISTS attempts_task ON attempts(task_id);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    family TEXT,
    reward REAL,
    correct INTEGER NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_created ON episodes(created);
CREATE TABLE IF NOT EXISTS baselines (
    task_id TEXT PRIMARY KEY,
    rate REAL NOT NULL,
    n INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    version INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""

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
)
_JSON_FIELDS = ("source_episodes", "source_tasks", "meta")
SELECT_INSIGHT = "SELECT " + ", ".join(INSIGHT_COLUMNS) + " FROM insights"


def connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), WAL, busy timeout set.
    A read-only connection opens the file with `mode=ro` and never creates it."""
    if readonly:
        if not path.is_file():
            raise FileNotFoundError(f"no memory at {path}")
        conn = sqlite3.connect(
            f"{path.resolve().as_uri()}?mode=ro",
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
        )
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed change survives power loss too, not only a killed process.
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return conn


def insight_from_row(row: tuple[Any, ...]) -> Insight:
    data = dict(zip(INSIGHT_COLUMNS, row, strict=True))
    for key in _JSON_FIELDS:
        data[key] = json.loads(data[key])
    data["absorbed"] = bool(data["absorbed"])
    return Insight.model_validate(data)


def insight_params(ins: Insight) -> tuple[Any, ...]:
    data = ins.model_dump(mode="json")
    for key in _JSON_FIELDS:
        data[key] = json.dumps(data[key])
    data["absorbed"] = int(data["absorbed"])
    return tuple(data[c] for c in INSIGHT_COLUMNS)


def vec_blob(vec: np.ndarray | None) -> bytes | None:
    return None if vec is None else np.asarray(vec, dtype=np.float32).tobytes()


def blob_vec(blob: bytes | None, dim: int) -> np.ndarray | None:
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
            "SELECT uses, utility_sum, utility_sq, successes FROM insight_task_stats "
            "WHERE insight_id = ? AND task_id = ?",
            (insight_id, task_id),
        ).fetchone()
        if row is None:
            return None
        return TaskStats(
            insight_id=insight_id,
            task_id=task_id,
            uses=row[0],
            utility_sum=row[1],
            utility_sq=row[2],
            successes=row[3],
        )

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
    return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM events").fetchone()[0])


@contextmanager
def write(conn: sqlite3.Connection, kind: str, clock: Callable[[], float]) -> Iterator[Tx]:
    """One write transaction plus its event. The version is taken inside the transaction, so two
    writers never hand out the same number."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        tx = Tx(conn, current_version(conn) + 1, clock(), kind)
        yield tx
        conn.execute(
            "INSERT INTO events (version, ts, kind, payload) VALUES (?, ?, ?, ?)",
            (tx.version, tx.now, tx.kind, tx.event_payload()),
        )
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
