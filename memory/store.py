"""`MemoryStore`: the insight memory of one run directory.

`run_dir/memory.sqlite` (WAL) is the source of truth: insights with their utility statistics,
per-task credit, the training problems they were credited on, verified attempts, episodes,
baselines, an append-only event log (one event and one new version per change) and a small
key-value table for run state. `run_dir/index.faiss` is derived: the insight vectors, stamped with
the memory version it reflects, rebuilt from the vectors kept in SQLite when it is missing, stale
or corrupt. Tasks and attempts are indexed in memory only (rebuilt on open, in milliseconds).

A writer and any number of read-only openers (`readonly=True`) may share a run directory: each
query reads one committed snapshot, and the in-memory indexes catch up with other writers' changes
by version before they answer.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from insightloop.core.config import MemoryConfig
from insightloop.core.episode import Episode
from insightloop.core.task import Task
from insightloop.memory import db, versions
from insightloop.memory.embed import Embedder
from insightloop.memory.index import VectorIndex
from insightloop.memory.records import (
    Attempt,
    ImportReport,
    Insight,
    InsightKind,
    InsightStatus,
    MemoryDiff,
    MemoryEvent,
    TaskStats,
    clean_text,
)
from insightloop.memory.retrieval import Candidate, NeighbourCredit, ScoredInsight, score_candidates, select

DB_NAME = "memory.sqlite"
INDEX_NAME = "index.faiss"
_PROBE = "insightloop embedder probe: count the vowels before answering."
_EMBEDDER_KEY = "_embedder"
_SORTS = {
    "utility": "CASE WHEN uses > 0 THEN utility_sum / uses ELSE 0 END DESC, uses DESC, n",
    "uses": "uses DESC, n",
    "recent": "created DESC, n DESC",
}


def _accumulate(stats: Insight | TaskStats, delta: float, success: int) -> dict[str, Any]:
    """The statistics after one more use with credit `delta`."""
    return {
        "uses": stats.uses + 1,
        "utility_sum": stats.utility_sum + delta,
        "utility_sq": stats.utility_sq + delta * delta,
        "successes": stats.successes + success,
    }


class ReadOnlyError(RuntimeError):
    """A change was asked of a store opened with readonly=True."""


class _Catalog:
    """An in-memory vector index over one table plus the row keys of its vectors."""

    def __init__(self, index: VectorIndex) -> None:
        self.index = index
        self.keys: dict[int, str] = {}
        self.max_n = 0

    def add(self, rows: list[tuple[int, str, np.ndarray]]) -> None:
        if not rows:
            return
        ns = np.array([r[0] for r in rows], dtype=np.int64)
        self.index.add(ns, np.stack([r[2] for r in rows]))
        for n, key, _ in rows:
            self.keys[n] = key
            self.max_n = max(self.max_n, n)


class MemoryStore:
    """Insights, attempts, episodes and baselines of one run (see the module docstring).

    Open with `MemoryStore.open(run_dir, embedder, cfg)`; use as a context manager or `close()`.
    """

    def __init__(
        self,
        run_dir: Path,
        conn: sqlite3.Connection,
        embedder: Embedder,
        cfg: MemoryConfig,
        readonly: bool,
        clock: Callable[[], float],
        rng: random.Random | None,
    ) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.embedder = embedder
        self.readonly = readonly
        self.index_state = "not loaded"
        self._conn = conn
        self._clock = clock
        self._rng = rng
        self._lock = threading.RLock()
        self._insights: VectorIndex | None = None
        self._tasks: _Catalog | None = None
        self._attempts: _Catalog | None = None
        self._seen = -1
        self._vectors_ok = True
        self._embedding_token: str | None = None
        self._closed = False

    @classmethod
    def open(
        cls,
        run_dir: str | Path,
        embedder: Embedder,
        cfg: MemoryConfig | None = None,
        readonly: bool = False,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> MemoryStore:
        """Open (a writer creates) the memory in `run_dir`. Nothing is embedded or indexed until a
        query needs it, so opening to list or diff never loads the embedding model."""
        run_dir = Path(run_dir).expanduser().resolve()
        conn = db.connect(run_dir / DB_NAME, readonly)
        return cls(run_dir, conn, embedder, cfg or MemoryConfig(), readonly, clock, rng)

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Save a fresh index (writer) and close the database."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                if not self.readonly and self._insights is not None:
                    self._refresh()
                    self._save_index()
            finally:
                self._conn.close()

    @property
    def path(self) -> Path:
        return self.run_dir / DB_NAME

    @property
    def index_path(self) -> Path:
        return self.run_dir / INDEX_NAME

    @property
    def version(self) -> int:
        """The current memory version (the number of the last committed event)."""
        with self._lock:
            return db.current_version(self._conn)

    # ---- internals: ids, transactions, embeddings --------------------------------------------
    def _new_id(self, prefix: str) -> str:
        bits = self._rng.getrandbits(48) if self._rng else int.from_bytes(np.random.bytes(6), "little")
        return f"{prefix}{bits:012x}"

    def _fresh_id(self, tx: db.Tx) -> str:
        """A new insight id; a seeded rng replayed after a restart must not reuse a stored id."""
        while True:
            candidate = self._new_id("i")
            if tx.conn.execute("SELECT 1 FROM insights WHERE id = ?", (candidate,)).fetchone() is None:
                return candidate

    @contextmanager
    def _write(self, kind: str) -> Iterator[db.Tx]:
        if self.readonly:
            raise ReadOnlyError("this memory was opened read-only; open it with readonly=False to change it")
        with self._lock, db.write(self._conn, kind, self._clock) as tx:
            yield tx

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, db.read(self._conn) as conn:
            yield conn

    def _embed(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.asarray(self.embedder.encode(texts), dtype=np.float32).reshape(len(texts), -1)

    def _vecs(self, rows: list[tuple[bytes | None, str]]) -> np.ndarray:
        """Stored vectors where valid; the texts of the rest are embedded in one batch."""
        dim = self.embedder.dim
        out = np.zeros((len(rows), dim), dtype=np.float32)
        missing = []
        for i, (blob, _) in enumerate(rows):
            vec = db.blob_vec(blob, dim) if self._vectors_ok else None
            if vec is None:
                missing.append(i)
            else:
                out[i] = vec
        if missing:
            out[missing] = self._embed([rows[i][1] for i in missing])
        return out

    # ---- internals: indexes ------------------------------------------------------------------
    def _check_embedder(self) -> None:
        """Stored vectors are used only if they came from this embedder (same dim, same probe
        vector). A writer re-embeds everything once when the model changed; a reader embeds texts
        in memory instead."""
        probe = self._embed([_PROBE])[0]
        stored = self.kv_get(_EMBEDDER_KEY)
        same = (
            stored is not None
            and stored.get("dim") == len(probe)
            and float(np.dot(np.asarray(stored["probe"], dtype=np.float32), probe)) >= 0.999
        )
        if same:
            self._embedding_token = stored.get("token")
            return
        if self.readonly:
            self._vectors_ok = stored is None
            return
        self._vectors_ok = False
        self._reembed_all()
        self._vectors_ok = True
        # A new token invalidates any index.faiss built from the previous model's vectors.
        self._embedding_token = uuid.uuid4().hex
        self.kv_set(
            _EMBEDDER_KEY,
            {
                "dim": len(probe),
                "probe": probe.tolist(),
                "name": getattr(self.embedder, "name", type(self.embedder).__name__),
                "token": self._embedding_token,
            },
        )

    def _reembed_all(self) -> None:
        for table, text_col in (("insights", "text"), ("tasks", "text"), ("attempts", "task_text")):
            with self._read() as conn:
                rows = conn.execute(f"SELECT n, {text_col} FROM {table}").fetchall()
            if not rows:
                continue
            vecs = self._embed([r[1] for r in rows])
            with self._lock:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    self._conn.executemany(
                        f"UPDATE {table} SET embedding = ? WHERE n = ?",
                        [(db.vec_blob(v), r[0]) for r, v in zip(rows, vecs, strict=True)],
                    )
                    self._conn.execute("COMMIT")
                except BaseException:
                    if self._conn.in_transaction:
                        self._conn.execute("ROLLBACK")
                    raise

    def _ensure_indexes(self) -> None:
        with self._lock:
            if self._insights is None:
                self._check_embedder()
                self._load_indexes()
            else:
                self._refresh()

    def _load_indexes(self) -> None:
        dim = self.embedder.dim
        use_gpu = self.cfg.use_gpu_index
        with self._read() as conn:
            version = db.current_version(conn)
            loaded, reason = VectorIndex.load(self.index_path, dim, self._stamp(version), use_gpu)
            if loaded is None or not self._vectors_ok:
                rows = conn.execute("SELECT n, embedding, text FROM insights").fetchall()
                loaded = VectorIndex(dim, use_gpu)
                loaded.add(
                    np.array([r[0] for r in rows], dtype=np.int64), self._vecs([(r[1], r[2]) for r in rows])
                )
                self.index_state = f"rebuilt ({reason if reason != 'loaded' else 'embedder changed'})"
            else:
                self.index_state = "loaded"
            self._insights = loaded
            self._tasks = _Catalog(VectorIndex(dim, use_gpu=False))
            self._attempts = _Catalog(VectorIndex(dim, use_gpu=False))
            self._load_catalogs(conn)
            self._seen = version
        if self.index_state != "loaded" and not self.readonly:
            self._save_index()

    def _load_catalogs(self, conn: sqlite3.Connection) -> None:
        assert self._tasks is not None and self._attempts is not None
        tasks = conn.execute(
            "SELECT n, id, embedding, text FROM tasks WHERE n > ?", (self._tasks.max_n,)
        ).fetchall()
        vecs = self._vecs([(r[2], r[3]) for r in tasks])
        self._tasks.add([(r[0], r[1], v) for r, v in zip(tasks, vecs, strict=True)])
        attempts = conn.execute(
            "SELECT n, id, embedding, task_text FROM attempts WHERE n > ?", (self._attempts.max_n,)
        ).fetchall()
        vecs = self._vecs([(r[2], r[3]) for r in attempts])
        self._attempts.add([(r[0], r[1], v) for r, v in zip(attempts, vecs, strict=True)])

    def _refresh(self) -> None:
        """Bring the in-memory indexes up to the committed version (this or another writer's changes)."""
        assert self._insights is not None
        with self._read() as conn:
            version = db.current_version(conn)
            if version == self._seen:
                return
            rows = conn.execute(
                "SELECT n, embedding, text FROM insights WHERE touched > ?", (self._seen,)
            ).fetchall()
            ns = np.array([r[0] for r in rows], dtype=np.int64)
            self._insights.upsert(ns, self._vecs([(r[1], r[2]) for r in rows]))
            if conn.execute(
                "SELECT 1 FROM events WHERE version > ? AND kind = 'rollback' LIMIT 1", (self._seen,)
            ).fetchone():
                present = {r[0] for r in conn.execute("SELECT n FROM insights")}
                gone = [n for n in self._insights.ids().tolist() if n not in present]
                self._insights.remove(np.array(gone, dtype=np.int64))
            self._load_catalogs(conn)
            self._seen = version

    def _stamp(self, version: int) -> dict[str, Any]:
        return {"version": version, "embedding": self._embedding_token}

    def _save_index(self) -> None:
        if self._insights is None or self._seen != self.version:
            return
        self._insights.save(self.index_path, self._stamp(self._seen))

    def save_index(self) -> None:
        """Write index.faiss now (a long-running writer may call this at checkpoints)."""
        with self._lock:
            self._ensure_indexes()
            self._save_index()

    # ---- small run state ---------------------------------------------------------------------
    def kv_get(self, key: str, default: Any = None) -> Any:
        """A JSON value from the key-value table (run state such as the current checkpoint)."""
        with self._read() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    def kv_set(self, key: str, value: Any) -> None:
        """Set a JSON value. Run state, not memory: no event, no new version."""
        if self.readonly:
            raise ReadOnlyError("this memory was opened read-only")
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES (?, ?)", (key, json.dumps(value))
            )

    # ---- insights: reading -------------------------------------------------------------------
    def get(self, insight_id: str) -> Insight:
        """The insight with this id; KeyError if there is none."""
        with self._read() as conn:
            row = conn.execute(db.SELECT_INSIGHT + " WHERE id = ?", (insight_id,)).fetchone()
        if row is None:
            raise KeyError(f"no insight {insight_id!r}")
        return db.insight_from_row(row)

    def list_insights(
        self,
        status: InsightStatus | None = None,
        sort: str = "utility",
        limit: int | None = None,
        family: str | None = None,
    ) -> list[Insight]:
        """Insights, optionally of one status / family, sorted by utility, uses or recency."""
        if sort not in _SORTS:
            raise ValueError(f"sort must be one of {sorted(_SORTS)}, got {sort!r}")
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if family is not None:
            where.append("family = ?")
            args.append(family)
        sql = (
            db.SELECT_INSIGHT
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY "
            + _SORTS[sort]
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._read() as conn:
            return [db.insight_from_row(r) for r in conn.execute(sql, args)]

    def _by_n(self, conn: sqlite3.Connection, ns: list[int]) -> dict[int, Insight]:
        return {n: ins for n, (ins, _) in self._rows_by_n(conn, ns).items()}

    def _rows_by_n(self, conn: sqlite3.Connection, ns: list[int]) -> dict[int, tuple[Insight, bytes | None]]:
        if not ns:
            return {}
        marks = ",".join("?" * len(ns))
        cols = ", ".join(db.INSIGHT_COLUMNS)
        rows = conn.execute(f"SELECT n, embedding, {cols} FROM insights WHERE n IN ({marks})", ns)
        return {r[0]: (db.insight_from_row(r[2:]), r[1]) for r in rows}

    def search(
        self, text: str, k: int = 10, status: InsightStatus | None = None
    ) -> list[tuple[Insight, float]]:
        """Plain cosine similarity of insight texts to `text`, best first (any status unless given)."""
        if k <= 0:
            return []
        q = self._embed([text])
        with self._lock:
            self._ensure_indexes()
            assert self._insights is not None
            fetch = k if status is None else max(4 * k, 64)
            while True:
                scores, ids = self._insights.search(q, fetch)
                with self._read() as conn:
                    found = self._by_n(conn, [int(i) for i in ids[0] if i >= 0])
                hits = [
                    (found[int(i)], float(s))
                    for s, i in zip(scores[0], ids[0], strict=True)
                    if int(i) in found and (status is None or found[int(i)].status == status)
                ]
                if len(hits) >= k or fetch >= len(self._insights):
                    return hits[:k]
                fetch *= 4

    # ---- insights: CORE retrieval ------------------------------------------------------------
    def retrieve(
        self, task: Task, k: int | None = None, train: bool = False, token_budget: int | None = None
    ) -> list[Insight]:
        """The active insights to put in the prompt for `task` (see `memory.retrieval`): scored
        by utility on the nearest credited problems, blended with text similarity, plus a UCB
        bonus when `train`; at most `k` (default cfg.top_k) within `token_budget` prompt tokens
        (default cfg.prompt_token_budget; 0 means no limit)."""
        return [s.insight for s in self.explain_retrieval(task, k, train, token_budget)]

    def explain_retrieval(
        self, task: Task, k: int | None = None, train: bool = False, token_budget: int | None = None
    ) -> list[ScoredInsight]:
        """`retrieve` with the parts of each score (utility, effective uses, similarity, bonus)."""
        k = self.cfg.top_k if k is None else k
        budget = self.cfg.prompt_token_budget if token_budget is None else token_budget
        if k <= 0:
            return []
        q = self._embed([task.prompt])
        with self._lock:
            self._ensure_indexes()
            candidates = self._candidates(q)
        scored = score_candidates(
            candidates,
            train=train,
            ucb_c=self.cfg.ucb_c,
            sim_weight=self.cfg.sim_weight,
            prior_uses=self.cfg.prior_uses,
        )
        return select(scored, k, budget or None, self.cfg.min_score)

    def _neighbours(self, q: np.ndarray) -> dict[str, float]:
        assert self._tasks is not None
        scores, ns = self._tasks.index.search(q, self.cfg.neighbours)
        return {self._tasks.keys[int(n)]: float(s) for s, n in zip(scores[0], ns[0], strict=True) if n >= 0}

    def _candidates(self, q: np.ndarray) -> list[Candidate]:
        """Active insights credited on the task's neighbours, plus the most text-similar ones."""
        assert self._insights is not None
        neighbours = self._neighbours(q)
        _, near = self._insights.search(q, self.cfg.candidates * 2)
        with self._read() as conn:
            credit: dict[str, list[NeighbourCredit]] = {}
            if neighbours:
                marks = ",".join("?" * len(neighbours))
                for iid, tid, uses, usum in conn.execute(
                    "SELECT insight_id, task_id, uses, utility_sum FROM insight_task_stats "
                    f"WHERE task_id IN ({marks})",
                    list(neighbours),
                ):
                    credit.setdefault(iid, []).append(
                        NeighbourCredit(task_id=tid, similarity=neighbours[tid], uses=uses, utility_sum=usum)
                    )
            ns = {int(n) for n in near[0] if n >= 0}
            if credit:
                marks = ",".join("?" * len(credit))
                ns |= {
                    r[0] for r in conn.execute(f"SELECT n FROM insights WHERE id IN ({marks})", list(credit))
                }
            found = [v for v in self._rows_by_n(conn, sorted(ns)).values() if v[0].status == "active"]
        vecs = self._vecs([(blob, ins.text) for ins, blob in found])
        sims = vecs @ q[0] if found else np.zeros(0)
        return [
            Candidate(insight=ins, similarity=float(sim), credit=credit.get(ins.id, []))
            for (ins, _), sim in zip(found, sims, strict=True)
        ]

    # ---- insights: lifecycle -----------------------------------------------------------------
    def _nearest(self, vec: np.ndarray) -> tuple[int, float] | None:
        self._ensure_indexes()
        assert self._insights is not None
        scores, ns = self._insights.search(vec.reshape(1, -1), 1)
        if ns.shape[1] == 0 or ns[0, 0] < 0:
            return None
        return int(ns[0, 0]), float(scores[0, 0])

    def _append_source(self, values: list[str], new: str | None) -> list[str]:
        if not new or new in values:
            return values
        return (values + [new])[-self.cfg.max_sources :]

    def add_insight(
        self,
        text: str,
        kind: InsightKind = "strategy",
        applies_when: str = "",
        family: str | None = None,
        source_episode: str | None = None,
        source_task: str | None = None,
        model: str = "",
        meta: dict[str, Any] | None = None,
        status: InsightStatus = "pending",
    ) -> tuple[Insight, bool]:
        """Add a candidate insight (cleaned and length-capped); True if it is new. A near-duplicate
        (cosine >= cfg.dedup_threshold with any stored insight, retired ones included, so a harmful
        lesson is not readmitted under new wording) merges its support into the existing one."""
        text = clean_text(text, self.cfg.max_insight_chars)
        if not text:
            raise ValueError("an insight needs some text (it was empty after cleaning)")
        applies_when = clean_text(applies_when, self.cfg.max_insight_chars)
        vec = self._embed([text])[0]
        with self._lock:
            near = self._nearest(vec)
            with self._write("add") as tx:
                existing = None
                if near is not None and near[1] >= self.cfg.dedup_threshold:
                    with_n = tx.conn.execute("SELECT id FROM insights WHERE n = ?", (near[0],)).fetchone()
                    existing = tx.get(with_n[0]) if with_n else None
                if existing is not None:
                    return self._merge(tx, existing, source_episode, source_task, near[1]), False  # type: ignore[index]
                ins = Insight(
                    id=self._fresh_id(tx),
                    text=text,
                    kind=kind,
                    applies_when=applies_when,
                    family=family,
                    status=status,
                    source_episodes=[source_episode] if source_episode else [],
                    source_tasks=[source_task] if source_task else [],
                    model=model,
                    created=tx.now,
                    meta=dict(meta or {}),
                )
                tx.payload = {"insight_id": ins.id, "status": status, "text": text}
                return tx.put(ins, vec), True

    def _merge(
        self, tx: db.Tx, existing: Insight, episode: str | None, task: str | None, sim: float
    ) -> Insight:
        meta = {**existing.meta, "support": int(existing.meta.get("support", 1)) + 1}
        merged = existing.model_copy(
            update={
                "source_episodes": self._append_source(existing.source_episodes, episode),
                "source_tasks": self._append_source(existing.source_tasks, task),
                "meta": meta,
            }
        )
        tx.kind = "merge"
        tx.payload = {"insight_id": existing.id, "similarity": round(sim, 4), "support": meta["support"]}
        return tx.put(merged)

    def _register_task(self, task: Task) -> np.ndarray | None:
        """The task's vector if it is not yet stored as a training problem (embedded outside the
        write transaction, which should stay short)."""
        with self._read() as conn:
            known = conn.execute("SELECT 1 FROM tasks WHERE id = ?", (task.id,)).fetchone()
        return None if known else self._embed([task.prompt])[0]

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
        with self._write("credit") as tx:
            if vec is not None:
                tx.conn.execute(
                    "INSERT OR IGNORE INTO tasks (id, family, text, created, embedding) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (task.id, task.family, task.prompt, tx.now, db.vec_blob(vec)),
                )
            done = [iid for iid in ids if self._credit_one(tx, iid, task.id, reward >= 1.0, delta)]
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

    @staticmethod
    def _credit_one(tx: db.Tx, insight_id: str, task_id: str, success: bool, delta: float) -> bool:
        ins = tx.get(insight_id)
        if ins is None:
            return False
        step = {"delta": delta, "success": int(success)}
        tx.put(ins.model_copy(update=_accumulate(ins, **step)))
        st = tx.stat(insight_id, task_id) or TaskStats(insight_id=insight_id, task_id=task_id)
        tx.put_stat(st.model_copy(update=_accumulate(st, **step)))
        return True

    def task_stats(self, insight_id: str) -> list[TaskStats]:
        """An insight's credit per task."""
        with self._read() as conn:
            rows = conn.execute(
                "SELECT task_id, uses, utility_sum, utility_sq, successes FROM insight_task_stats "
                "WHERE insight_id = ? ORDER BY task_id",
                (insight_id,),
            ).fetchall()
        return [
            TaskStats(
                insight_id=insight_id,
                task_id=r[0],
                uses=r[1],
                utility_sum=r[2],
                utility_sq=r[3],
                successes=r[4],
            )
            for r in rows
        ]

    def _update(
        self, kind: str, insight_id: str, payload: dict[str, Any], change: Callable[[Insight], Insight]
    ) -> Insight:
        with self._write(kind) as tx:
            ins = tx.get(insight_id)
            if ins is None:
                raise KeyError(f"no insight {insight_id!r}")
            tx.payload = {"insight_id": insight_id, **payload}
            return tx.put(change(ins))

    def record_admission(self, insight_id: str, admitted: bool, reason: str = "") -> Insight:
        """The admission test's verdict: a pending insight becomes active, or retired with the
        reason. On an insight that is no longer pending the verdict is only recorded in `meta`."""

        def change(ins: Insight) -> Insight:
            meta = {**ins.meta, "admission": {"admitted": admitted, "reason": reason}}
            status = ins.status
            if ins.status == "pending":
                status = "active" if admitted else "retired"
                if not admitted:
                    meta["status_reason"] = reason
            return ins.model_copy(update={"status": status, "meta": meta})

        return self._update("admission", insight_id, {"admitted": admitted, "reason": reason}, change)

    def set_status(self, insight_id: str, status: InsightStatus, reason: str = "") -> Insight:
        return self._update(
            "status",
            insight_id,
            {"status": status, "reason": reason},
            lambda i: i.model_copy(update={"status": status, "meta": {**i.meta, "status_reason": reason}}),
        )

    def mark_absorbed(self, insight_id: str, checkpoint: str | None = None) -> Insight:
        """Record that the insight was folded into the weights (of `checkpoint`; default: the
        run's current checkpoint in kv["checkpoint"], if any)."""
        checkpoint = checkpoint if checkpoint is not None else self.kv_get("checkpoint")
        label = checkpoint if checkpoint is None or isinstance(checkpoint, str) else json.dumps(checkpoint)
        return self._update(
            "absorb",
            insight_id,
            {"checkpoint": label},
            lambda i: i.model_copy(update={"absorbed": True, "meta": {**i.meta, "absorbed_into": label}}),
        )

    def edit(self, insight_id: str, text: str) -> Insight:
        """Replace the text (cleaned, capped, re-embedded); its statistics stay."""
        text = clean_text(text, self.cfg.max_insight_chars)
        if not text:
            raise ValueError("an insight needs some text (it was empty after cleaning)")
        current = self.get(insight_id)
        if current.text == text:
            return current
        vec = self._embed([text])[0]
        with self._write("edit") as tx:
            ins = tx.get(insight_id)
            if ins is None:
                raise KeyError(f"no insight {insight_id!r}")
            tx.payload = {"insight_id": insight_id, "text": text, "previous": ins.text}
            return tx.put(ins.model_copy(update={"text": text}), vec)

    def retire_if_harmful(self) -> list[Insight]:
        """Retire every active insight whose utility upper bound (z = cfg.retire_z) is below zero
        after at least cfg.retire_min_uses uses. One event for the whole batch."""
        harmful = [
            i
            for i in self.list_insights(status="active")
            if i.uses >= self.cfg.retire_min_uses and i.utility_bounds(self.cfg.retire_z)[1] < 0
        ]
        if not harmful:
            return []
        out = []
        with self._write("retire") as tx:
            for ins in harmful:
                fresh = tx.get(ins.id)
                if fresh is None or fresh.status != "active":
                    continue
                hi = fresh.utility_bounds(self.cfg.retire_z)[1]
                reason = (
                    f"harmful: utility {fresh.utility:+.3f}, upper bound {hi:+.3f} after {fresh.uses} uses"
                )
                out.append(
                    tx.put(
                        fresh.model_copy(
                            update={"status": "retired", "meta": {**fresh.meta, "status_reason": reason}}
                        )
                    )
                )
            tx.payload = {"insight_ids": [i.id for i in out], "reason": "utility confidently below zero"}
        return out

    # ---- attempts ----------------------------------------------------------------------------
    def add_attempt(self, attempt: Attempt) -> Attempt:
        """Keep a verified attempt (indexed by its task text). The same id, or the same text for
        the same task, is stored once; the stored record is returned."""
        with self._read() as conn:
            row = conn.execute(
                "SELECT id FROM attempts WHERE id = ? OR (task_id = ? AND text = ?)",
                (attempt.id, attempt.task_id, attempt.text),
            ).fetchone()
        if row is not None:
            return self.get_attempt(row[0])
        vec = self._embed([attempt.task_text])[0]
        with self._write("attempt") as tx:
            tx.conn.execute(
                "INSERT INTO attempts (id, task_id, task_text, family, text, reward, created, embedding) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    attempt.id,
                    attempt.task_id,
                    attempt.task_text,
                    attempt.family,
                    attempt.text,
                    attempt.reward,
                    attempt.created,
                    db.vec_blob(vec),
                ),
            )
            tx.payload = {"id": attempt.id, "task_id": attempt.task_id, "reward": attempt.reward}
        return attempt

    _ATTEMPT_COLS = "id, task_id, task_text, family, text, reward, created"

    @staticmethod
    def _attempt(row: tuple[Any, ...]) -> Attempt:
        keys = ("id", "task_id", "task_text", "family", "text", "reward", "created")
        return Attempt.model_validate(dict(zip(keys, row, strict=True)))

    def get_attempt(self, attempt_id: str) -> Attempt:
        with self._read() as conn:
            row = conn.execute(
                f"SELECT {self._ATTEMPT_COLS} FROM attempts WHERE id = ?", (attempt_id,)
            ).fetchone()
        if row is None:
            raise KeyError(f"no attempt {attempt_id!r}")
        return self._attempt(row)

    def list_attempts(self, task_id: str | None = None, limit: int | None = None) -> list[Attempt]:
        sql = f"SELECT {self._ATTEMPT_COLS} FROM attempts"
        args: list[Any] = []
        if task_id is not None:
            sql += " WHERE task_id = ?"
            args.append(task_id)
        sql += " ORDER BY n DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        with self._read() as conn:
            return [self._attempt(r) for r in conn.execute(sql, args)]

    def similar_attempts(
        self, text: str, k: int = 1, family: str | None = None
    ) -> list[tuple[Attempt, float]]:
        """Stored attempts whose task text is most similar to `text` (a task prompt), best first."""
        if k <= 0:
            return []
        q = self._embed([text])
        with self._lock:
            self._ensure_indexes()
            assert self._attempts is not None
            total = len(self._attempts.index)
            fetch = k if family is None else max(8 * k, 64)
            while True:
                scores, ns = self._attempts.index.search(q, fetch)
                keys = [self._attempts.keys[int(n)] for n in ns[0] if n >= 0]
                with self._read() as conn:
                    marks = ",".join("?" * len(keys))
                    rows = (
                        conn.execute(
                            f"SELECT {self._ATTEMPT_COLS} FROM attempts WHERE id IN ({marks})", keys
                        ).fetchall()
                        if keys
                        else []
                    )
                found = {r[0]: self._attempt(r) for r in rows}
                hits = [
                    (found[key], float(s))
                    for key, s in zip(keys, scores[0], strict=False)
                    if key in found and (family is None or found[key].family == family)
                ]
                if len(hits) >= k or fetch >= total:
                    return hits[:k]
                fetch *= 4

    # ---- episodes and baselines --------------------------------------------------------------
    def add_episode(self, episode: Episode | dict[str, Any]) -> Episode:
        """Store (or replace) an episode record."""
        ep = episode if isinstance(episode, Episode) else Episode.model_validate(episode)
        reward = ep.reward.score if ep.reward is not None else None
        with self._write("episode") as tx:
            tx.conn.execute(
                "INSERT OR REPLACE INTO episodes (id, task_id, family, reward, correct, created, body) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    ep.id,
                    ep.task.id,
                    ep.task.family,
                    reward,
                    int(ep.correct),
                    ep.started,
                    ep.model_dump_json(),
                ),
            )
            tx.payload = {
                "id": ep.id,
                "task_id": ep.task.id,
                "reward": reward,
                "insight_ids": list(ep.insights_used),
            }
        return ep

    def get_episode(self, episode_id: str) -> Episode:
        """The episode with this id; KeyError if there is none."""
        with self._read() as conn:
            row = conn.execute("SELECT body FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        if row is None:
            raise KeyError(f"no episode {episode_id!r}")
        return Episode.model_validate_json(row[0])

    def list_episodes(self, failed_only: bool = False, limit: int | None = None) -> list[Episode]:
        """Episodes, oldest first (the last `limit` when given)."""
        sql = "SELECT body FROM episodes" + (" WHERE correct = 0" if failed_only else "")
        sql += " ORDER BY created DESC, rowid DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        with self._read() as conn:
            bodies = [r[0] for r in conn.execute(sql)]
        return [Episode.model_validate_json(b) for b in reversed(bodies)]

    def set_baseline(self, task_id: str, rate: float, n: int) -> None:
        """The task's success rate without insights, from `n` samples."""
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"a baseline rate is in [0, 1], got {rate}")
        with self._write("baseline") as tx:
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
        with self._read() as conn:
            row = conn.execute("SELECT rate, n FROM baselines WHERE task_id = ?", (task_id,)).fetchone()
        return None if row is None else (float(row[0]), int(row[1]))

    # ---- versions ----------------------------------------------------------------------------
    def events(self, since_version: int = 0) -> list[MemoryEvent]:
        """Committed events after `since_version`, oldest first (row snapshots left out)."""
        with self._read() as conn:
            return versions.list_events(conn, since_version)

    def versions(self) -> list[MemoryEvent]:
        """One entry per memory version, oldest first."""
        return self.events(0)

    def diff(self, v1: int, v2: int) -> MemoryDiff:
        """Insights added, removed and changed from version v1 to v2."""
        with self._read() as conn:
            current = db.current_version(conn)
            for v in (v1, v2):
                if not 0 <= v <= current:
                    raise ValueError(f"version {v} does not exist (the memory is at v{current})")
            return versions.diff(conn, v1, v2)

    def rollback(self, version: int) -> int:
        """Restore the insights and their per-task credit exactly as they were at `version`.
        Attempts, episodes and baselines are observations and stay. The rollback is itself a new
        event (so it can be undone by another rollback); returns the new version."""
        with self._lock:
            with self._read() as conn:
                current = db.current_version(conn)
                if not 0 <= version <= current:
                    raise ValueError(f"version {version} does not exist (the memory is at v{current})")
                target, target_stats = versions.state_at(conn, version)
                now = {r[0]: r[1] for r in conn.execute("SELECT id, text FROM insights")}
            need = [i for i, row in target.items() if now.get(i) != row["text"]]
            vecs = dict(zip(need, self._embed([target[i]["text"] for i in need]), strict=True))
            with self._write("rollback") as tx:
                self._restore(tx, target, target_stats, vecs)
                tx.payload = {"to": version, "from": current, "restored": len(tx.rows)}
                return tx.version

    def _restore(
        self, tx: db.Tx, target: versions.Rows, target_stats: versions.StatRows, vecs: dict[str, np.ndarray]
    ) -> None:
        current = {
            r[0]: db.insight_from_row(r[1:])
            for r in tx.conn.execute(f"SELECT n, {', '.join(db.INSIGHT_COLUMNS)} FROM insights")
        }
        by_id = {ins.id: ins for ins in current.values()}
        for insight_id in set(by_id) - set(target):
            tx.delete(insight_id)
        for insight_id, row in target.items():
            ins = Insight.model_validate({k: v for k, v in row.items() if not k.startswith("_")})
            if by_id.get(insight_id) != ins:
                tx.put(ins, vecs.get(insight_id), restamp=False, n=row.get("_n"))
        stats = {
            (r[0], r[1]): TaskStats(
                insight_id=r[0], task_id=r[1], uses=r[2], utility_sum=r[3], utility_sq=r[4], successes=r[5]
            )
            for r in tx.conn.execute(
                "SELECT insight_id, task_id, uses, utility_sum, utility_sq, successes FROM insight_task_stats"
            )
        }
        for key in set(stats) - set(target_stats):
            tx.delete_stat(*key)
        for key, row in target_stats.items():
            st = TaskStats.model_validate(row)
            if stats.get(key) != st:
                tx.put_stat(st)

    # ---- moving memories between runs --------------------------------------------------------
    def export_jsonl(self, path: str | Path) -> int:
        """Write the memory as JSON lines (see `memory.transfer`); returns the lines written."""
        from insightloop.memory.transfer import export_jsonl

        return export_jsonl(self, Path(path))

    def import_jsonl(self, path: str | Path) -> ImportReport:
        """Merge a JSON-lines export into this memory in one transaction (see `memory.transfer`)."""
        from insightloop.memory.transfer import import_jsonl

        return import_jsonl(self, Path(path))
