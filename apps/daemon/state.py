"""The daemon's durable state: `RUN_DIR/daemon.sqlite` (WAL), its schema and transactions.

One database holds the inbox bookkeeping (`files`, `tasks`), the spend ledger behind the budget
windows (`spend`), the scores behind the accuracy in status.json (`scores`) and self-practice
statistics (`practice`), so a restart resumes all of them together.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

STATE_DB = "daemon.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS files(name TEXT PRIMARY KEY, source TEXT NOT NULL, state TEXT NOT NULL,
    claimed REAL NOT NULL, finished REAL, n_tasks INTEGER, n_bad INTEGER DEFAULT 0, error TEXT);
CREATE TABLE IF NOT EXISTS tasks(file TEXT NOT NULL, task_id TEXT NOT NULL, seq INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, result TEXT, reward REAL, finished REAL,
    error TEXT, PRIMARY KEY(file, task_id));
CREATE TABLE IF NOT EXISTS spend(ts REAL NOT NULL, rollouts INTEGER NOT NULL, tokens INTEGER NOT NULL,
    usd REAL NOT NULL, seconds REAL NOT NULL);
CREATE INDEX IF NOT EXISTS spend_ts ON spend(ts);
CREATE TABLE IF NOT EXISTS scores(ts REAL NOT NULL, reward REAL NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS practice(key TEXT PRIMARY KEY, attempts INTEGER NOT NULL,
    successes INTEGER NOT NULL, streak INTEGER NOT NULL, last REAL NOT NULL);
"""


def open_state_db(path: Path) -> sqlite3.Connection:
    """Open (creating) the daemon's SQLite state in WAL mode; usable from the worker thread."""
    con = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(SCHEMA)
    return con


@contextlib.contextmanager
def transaction(con: sqlite3.Connection) -> Iterator[None]:
    """One write transaction; the connection is in autocommit mode, so it is opened explicitly
    (IMMEDIATE: take the write lock up front) and rolled back on any exit but a normal one."""
    con.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")
