"""`Session`: the one SQLite connection every part of a memory shares, and how they use it.

A session owns the connection, one re-entrant lock (a part may hold it across several queries, e.g.
"find the nearest insight, then write"), read transactions (one committed snapshot per block), write
transactions (one event and one new memory version each, refused on a read-only session), batches
of them (one commit for many writes), id generation and the small key-value table for run state.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from insightloop.memory import db
from insightloop.memory.errors import ReadOnlyError


class Session:
    """A memory's connection, lock and transactions (see the module docstring)."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        readonly: bool,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.conn = conn
        self.readonly = readonly
        self.clock = clock
        self.rng = rng
        self.lock = threading.RLock()
        self._batching = False

    @classmethod
    def open(
        cls,
        path: Path,
        readonly: bool,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> Session:
        """Connect to the database at `path` (a writer creates or migrates it; see `memory.schema`)."""
        return cls(db.connect(path, readonly), readonly, clock, rng)

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one committed snapshot."""
        with self.lock, db.read(self.conn) as conn:
            yield conn

    @contextmanager
    def write(self, kind: str) -> Iterator[db.Tx]:
        """A write transaction that commits as one event of `kind` (and one new version); inside
        `batch` it is a savepoint committed with the batch."""
        if self.readonly:
            raise ReadOnlyError("this memory was opened read-only; open it with readonly=False to change it")
        with self.lock, db.write(self.conn, kind, self.clock, nested=self._batching) as tx:
            yield tx

    @contextmanager
    def untracked(self) -> Iterator[sqlite3.Connection]:
        """A write transaction with no event, for derived data such as stored vectors."""
        with self.lock, db.untracked(self.conn, nested=self._batching) as conn:
            yield conn

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes in one transaction: each keeps its own event and version, one commit makes
        them all durable, and an exception rolls all of them back. Re-entrant (an inner batch joins
        the outer one); the lock is held throughout, so no other thread's write interleaves."""
        if self.readonly:
            raise ReadOnlyError("this memory was opened read-only; open it with readonly=False to change it")
        with self.lock:
            if self._batching:
                yield
                return
            with db.batch(self.conn):
                self._batching = True
                try:
                    yield
                finally:
                    self._batching = False

    @property
    def version(self) -> int:
        """The current memory version (the number of the last committed event)."""
        with self.lock:
            return db.current_version(self.conn)

    def new_id(self, prefix: str) -> str:
        """A random id; drawn from the seeded rng when there is one (reproducible runs)."""
        bits = self.rng.getrandbits(48) if self.rng else int.from_bytes(np.random.bytes(6), "little")
        return f"{prefix}{bits:012x}"

    def fresh_insight_id(self, tx: db.Tx) -> str:
        """A new insight id; a seeded rng replayed after a restart must not reuse a stored id."""
        while True:
            candidate = self.new_id("i")
            if tx.conn.execute("SELECT 1 FROM insights WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate

    def kv_get(self, key: str, default: Any = None) -> Any:
        """A JSON value from the key-value table (run state such as the current checkpoint)."""
        with self.read() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def kv_set(self, key: str, value: Any) -> None:
        """Set a JSON value. Run state, not memory: no event, no new version."""
        if self.readonly:
            raise ReadOnlyError("this memory was opened read-only")
        with self.lock:
            self.conn.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )
