"""`Indexes`: the in-memory vector indexes of one memory, kept in step with its database.

Three indexes: insights (exact search or an HNSW graph by size, see `memory.index`; saved as
`index.faiss`, stamped with the memory version and the embedder,
reloaded when the stamp matches and rebuilt from SQLite when it is missing, stale or corrupt), and
the training tasks and attempts (`Catalog`s, rebuilt on open in milliseconds). Nothing is embedded
or loaded until a query needs it, so opening a memory to list or diff never loads the embedding model.
Before each use the indexes catch up, by version, with changes committed by this or another writer.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from insightloop.core.config import MemoryConfig
from insightloop.memory import db
from insightloop.memory.index import VectorIndex
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors


class Catalog:
    """A vector index over one table plus the row keys (ids) of its vectors, by row number."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.keys: dict[int, str] = {}
        self.max_n = 0

    def add(self, rows: list[tuple[int, str, np.ndarray]]) -> None:
        """Add (row number, key, vector) rows."""
        if not rows:
            return
        ns = np.array([r[0] for r in rows], dtype=np.int64)
        self.index.add(ns, np.stack([r[2] for r in rows]))
        for n, key, _ in rows:
            self.keys[n] = key
            self.max_n = max(self.max_n, n)

    def search(self, q: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The keys of the `k` nearest rows to the query row `q`, with their scores, best first."""
        scores, ns = self.index.search(q, k)
        return [(self.keys[int(n)], float(s)) for s, n in zip(scores[0], ns[0], strict=True) if n >= 0]


@dataclass
class Loaded:
    """The indexes once loaded: insights keyed by row number, tasks and attempts by id."""

    insights: VectorIndex
    tasks: Catalog
    attempts: Catalog


class Indexes:
    """Loads, refreshes and saves a memory's vector indexes (see the module docstring)."""

    def __init__(self, session: Session, vectors: Vectors, path: Path, cfg: MemoryConfig) -> None:
        self.session = session
        self.vectors = vectors
        self.path = path
        self.cfg = cfg
        self.use_gpu = cfg.use_gpu_index
        self.state = "not loaded"
        self._loaded: Loaded | None = None
        self._seen = -1

    def ensure(self) -> Loaded:
        """The indexes, loaded on first use and brought up to the committed version after."""
        with self.session.lock:
            if self._loaded is None:
                self.vectors.check()
                return self._load()
            self._refresh(self._loaded)
            return self._loaded

    def nearest(self, vec: np.ndarray) -> tuple[int, float] | None:
        """(row number, cosine) of the stored insight nearest to `vec`, or None for an empty memory."""
        with self.session.lock:
            scores, ns = self.ensure().insights.search(vec.reshape(1, -1), 1)
        if ns.shape[1] == 0 or ns[0, 0] < 0:
            return None
        return int(ns[0, 0]), float(scores[0, 0])

    def invalidate(self) -> None:
        """Forget the loaded indexes; the next use loads them again. After a rolled-back batch: an
        index refreshed inside it may hold rows that were never committed, under a version number
        the next commit reuses, so catching up by version would not notice."""
        with self.session.lock:
            self._loaded, self._seen, self.state = None, -1, "not loaded"

    def save(self) -> None:
        """Write index.faiss now (a long-running writer may call this at checkpoints)."""
        with self.session.lock:
            self.ensure()
            self._save()

    def flush(self) -> None:
        """On a writer's close: save a fresh index if one was loaded."""
        with self.session.lock:
            if self._loaded is not None and not self.session.readonly:
                self._refresh(self._loaded)
                self._save()

    def _stamp(self, version: int) -> dict[str, Any]:
        return {"version": version, "embedding": self.vectors.token}

    def _save(self) -> None:
        if self._loaded is None or self._seen != self.session.version:
            return
        self._loaded.insights.save(self.path, self._stamp(self._seen))

    def _load(self) -> Loaded:
        dim = self.vectors.dim
        with self.session.read() as conn:
            version = db.current_version(conn)
            # A reader never builds a graph: it cannot save one, so every reader would build it again.
            build = not self.session.readonly
            saved, reason = VectorIndex.load(self.path, dim, self._stamp(version), self.use_gpu, self.cfg, build)
            if saved is None or not self.vectors.stored_ok:
                rows = conn.execute("SELECT n, embedding, text FROM insights").fetchall()
                saved = VectorIndex(dim, self.use_gpu, self.cfg, build_graph=build)
                ns = np.array([r[0] for r in rows], dtype=np.int64)
                saved.add(ns, self.vectors.rows([(r[1], r[2]) for r in rows]))
                self.state = f"rebuilt ({reason if reason != 'loaded' else 'embedder changed'})"
            else:
                self.state = "loaded"
            # Tasks and attempts are only searched here, never saved, and rebuilt on every open: an exact
            # CPU index (a graph would cost seconds per open at the sizes where it starts to pay).
            loaded = Loaded(saved, Catalog(self._catalog_index(dim)), Catalog(self._catalog_index(dim)))
            self._load_catalogs(conn, loaded)
            self._loaded, self._seen = loaded, version
        if self.state != "loaded" and not self.session.readonly:
            self._save()
        return loaded

    def _catalog_index(self, dim: int) -> VectorIndex:
        return VectorIndex(dim, use_gpu=False, cfg=self.cfg, build_graph=False)

    def _load_catalogs(self, conn: sqlite3.Connection, loaded: Loaded) -> None:
        """Add the task and attempt rows newer than those already indexed."""
        sources = ((loaded.tasks, "tasks", "text"), (loaded.attempts, "attempts", "task_text"))
        for catalog, table, text_col in sources:
            rows = conn.execute(
                f"SELECT n, id, embedding, {text_col} FROM {table} WHERE n > ?", (catalog.max_n,)
            ).fetchall()
            vecs = self.vectors.rows([(r[2], r[3]) for r in rows])
            catalog.add([(r[0], r[1], v) for r, v in zip(rows, vecs, strict=True)])

    def _refresh(self, loaded: Loaded) -> None:
        """Bring the indexes up to the committed version (this or another writer's changes)."""
        with self.session.read() as conn:
            version = db.current_version(conn)
            if version == self._seen:
                return
            rows = conn.execute(
                "SELECT n, embedding, text FROM insights WHERE touched > ?", (self._seen,)
            ).fetchall()
            ns = np.array([r[0] for r in rows], dtype=np.int64)
            loaded.insights.upsert(ns, self.vectors.rows([(r[1], r[2]) for r in rows]))
            if conn.execute(
                "SELECT 1 FROM events WHERE version > ? AND kind = 'rollback' LIMIT 1", (self._seen,)
            ).fetchone():
                # A rollback can delete rows; nothing else does, so only then look for the gone ones.
                present = {r[0] for r in conn.execute("SELECT n FROM insights")}
                gone = [n for n in loaded.insights.ids().tolist() if n not in present]
                loaded.insights.remove(np.array(gone, dtype=np.int64))
            self._load_catalogs(conn, loaded)
            self._seen = version
