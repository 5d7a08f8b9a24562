"""The memory database's schema and its version: created, checked and migrated when a file is opened.

`PRAGMA user_version` holds the schema version (0: an empty file with no schema yet). On open:

- a version newer than `SCHEMA_VERSION` is refused with `MemoryVersionError` (this code would
  misread it), whether the opener reads or writes;
- an older known version is migrated by a writer, one step of `MIGRATIONS` at a time, each step and
  its new version number in one transaction (a crash mid-upgrade leaves the last finished version,
  and a second writer opening at the same moment finds the steps already done); a reader cannot
  upgrade and is refused with `MemoryVersionError`;
- a file that is not a SQLite database, or whose header is damaged, is refused with
  `MemoryFileError` instead of a raw `sqlite3` error.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from insightloop.memory.errors import MemoryFileError, MemoryVersionError
from insightloop.memory.summaries import add_summary_columns

SCHEMA_VERSION = 3

_V1 = (
    """CREATE TABLE IF NOT EXISTS insights (
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
)""",
    "CREATE INDEX IF NOT EXISTS insights_status ON insights(status)",
    "CREATE INDEX IF NOT EXISTS insights_touched ON insights(touched)",
    """CREATE TABLE IF NOT EXISTS insight_task_stats (
    insight_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    uses INTEGER NOT NULL,
    utility_sum REAL NOT NULL,
    utility_sq REAL NOT NULL,
    successes INTEGER NOT NULL,
    PRIMARY KEY (insight_id, task_id)
)""",
    "CREATE INDEX IF NOT EXISTS insight_task_stats_task ON insight_task_stats(task_id)",
    """CREATE TABLE IF NOT EXISTS tasks (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    family TEXT,
    text TEXT NOT NULL,
    created REAL NOT NULL,
    embedding BLOB
)""",
    """CREATE TABLE IF NOT EXISTS attempts (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    task_text TEXT NOT NULL,
    family TEXT,
    text TEXT NOT NULL,
    reward REAL NOT NULL,
    created REAL NOT NULL,
    embedding BLOB
)""",
    "CREATE INDEX IF NOT EXISTS attempts_task ON attempts(task_id)",
    """CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    task_id TEXT NOT NULL,
    family TEXT,
    reward REAL,
    correct INTEGER NOT NULL,
    created REAL NOT NULL,
    body TEXT NOT NULL
)""",
    "CREATE INDEX IF NOT EXISTS episodes_created ON episodes(created)",
    """CREATE TABLE IF NOT EXISTS baselines (
    task_id TEXT PRIMARY KEY,
    rate REAL NOT NULL,
    n INTEGER NOT NULL,
    updated REAL NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS events (
    version INTEGER PRIMARY KEY,
    ts REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
)""",
)

Migration = Callable[[sqlite3.Connection], None]


def _create_v1(conn: sqlite3.Connection) -> None:
    """0 → 1: the whole schema. `IF NOT EXISTS` also completes a file written before the version
    was recorded, keeping its rows."""
    for statement in _V1:
        conn.execute(statement)


def _add_solution(conn: sqlite3.Connection) -> None:
    """2 → 3: worked examples keep their verified solution beside the problem (rules leave it empty).
    A file whose recorded version lags its tables (written before versions were kept) has it already."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(insights)")}
    if "solution" not in columns:
        conn.execute("ALTER TABLE insights ADD COLUMN solution TEXT NOT NULL DEFAULT ''")


# MIGRATIONS[v] takes a database from version v to v + 1; a new schema version adds one step here.
# 1 → 2: per-episode summary columns, filled from the stored bodies (see `memory.summaries`).
# 2 → 3: the `solution` of worked-example items.
MIGRATIONS: dict[int, Migration] = {0: _create_v1, 1: add_summary_columns, 2: _add_solution}


def user_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def _step(conn: sqlite3.Connection, target: int) -> bool:
    """Run the next migration step toward `target` in its own transaction; False when none was due.
    The version is read inside the write lock, so concurrent writers never repeat a step."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = user_version(conn)
        if found < target:
            MIGRATIONS[found](conn)
            conn.execute(f"PRAGMA user_version = {found + 1}")
        conn.execute("COMMIT")
        return found < target
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def migrate(conn: sqlite3.Connection, target: int | None = None) -> None:
    """Bring a writer's database up to `target` (default: `SCHEMA_VERSION`), one step at a time."""
    while _step(conn, SCHEMA_VERSION if target is None else target):
        pass


def is_damaged(exc: sqlite3.Error) -> bool:
    """Not a database or a corrupt one, as opposed to a busy or unopenable file (OperationalError),
    which says nothing about the content."""
    return isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError)


def prepare(conn: sqlite3.Connection, path: Path, readonly: bool) -> None:
    """Check the file's schema version and migrate it (writer) or refuse it (see the module docstring)."""
    try:
        found = user_version(conn)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        if found > SCHEMA_VERSION:
            raise MemoryVersionError(path, found, SCHEMA_VERSION, readonly)
        if readonly:
            if found < SCHEMA_VERSION:
                raise MemoryVersionError(path, found, SCHEMA_VERSION, readonly)
            return
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a committed change survives power loss too, not only a killed process.
        conn.execute("PRAGMA synchronous = FULL")
        migrate(conn)
    except sqlite3.Error as e:
        if is_damaged(e):
            raise MemoryFileError(path, str(e)) from e
        raise
