"""`MemoryStore`: the insight memory of one run directory, the one face callers use.

`run_dir/memory.sqlite` (WAL) is the source of truth: insights with their utility statistics,
per-task credit, the training problems they were credited on, verified attempts, episodes,
baselines, an append-only event log (one event and one new version per change) and a small
key-value table for run state. `run_dir/index.faiss` is derived (see `memory.indexes`).

A writer and any number of read-only openers (`readonly=True`) may share a run directory: each
query reads one committed snapshot, and the in-memory indexes catch up with other writers' changes
by version before they answer.

The store opens the connection and owns the parts, one concern each, all on one `Session`:
`insights` (`memory.insights`), `ledger` (credit, task stats, baselines: `memory.credit`),
`recall` (search and retrieval: `memory.recall`), `attempts`, `episodes`, `history` (versions,
rollback, export/import: `memory.history`) and `indexes` (`memory.indexes`). Its methods delegate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from insightloop.core.config import MemoryConfig
from insightloop.core.episode import Episode
from insightloop.core.task import Task
from insightloop.memory.attempts import Attempts
from insightloop.memory.credit import CreditLedger
from insightloop.memory.db import DB_NAME
from insightloop.memory.embed import Embedder
from insightloop.memory.episodes import Episodes
from insightloop.memory.errors import ReadOnlyError
from insightloop.memory.history import History
from insightloop.memory.indexes import Indexes
from insightloop.memory.insights import Insights
from insightloop.memory.recall import Recall
from insightloop.memory.records import (
    Attempt,
    ImportReport,
    Insight,
    InsightKind,
    InsightStatus,
    MemoryDiff,
    MemoryEvent,
    TaskStats,
)
from insightloop.memory.retrieval import ScoredInsight
from insightloop.memory.session import Session
from insightloop.memory.summaries import EpisodeSummary
from insightloop.memory.vectors import Vectors

INDEX_NAME = "index.faiss"
__all__ = ["DB_NAME", "INDEX_NAME", "MemoryStore", "ReadOnlyError"]


class MemoryStore:
    """Insights, attempts, episodes and baselines of one run (see the module docstring).

    Open with `MemoryStore.open(run_dir, embedder, cfg)`; use as a context manager or `close()`.
    """

    def __init__(self, run_dir: Path, session: Session, embedder: Embedder, cfg: MemoryConfig) -> None:
        self.run_dir = run_dir
        self.cfg = cfg
        self.embedder = embedder
        self.readonly = session.readonly
        self.session = session
        self.vectors = Vectors(session, embedder)
        self.indexes = Indexes(session, self.vectors, run_dir / INDEX_NAME, cfg)
        self.insights = Insights(session, self.vectors, self.indexes, cfg)
        self.ledger = CreditLedger(session, self.vectors)
        self.recall = Recall(session, self.vectors, self.indexes, cfg)
        self.attempts = Attempts(session, self.vectors, self.indexes)
        self.episodes = Episodes(session)
        self.history = History(session, self.vectors, self.indexes, cfg, run_dir)
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
        query needs it, so opening to list or diff never loads the embedding model. A damaged file
        or one of an unknown schema version raises a `UserError` saying what to do."""
        run_dir = Path(run_dir).expanduser().resolve()
        session = Session.open(run_dir / DB_NAME, readonly, clock, rng)
        return cls(run_dir, session, embedder, cfg or MemoryConfig())

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Save a fresh index (writer) and close the database."""
        with self.session.lock:
            if self._closed:
                return
            self._closed = True
            try:
                self.indexes.flush()
            finally:
                self.session.close()

    @property
    def path(self) -> Path:
        return self.run_dir / DB_NAME

    @property
    def index_path(self) -> Path:
        return self.indexes.path

    @property
    def index_state(self) -> str:
        """How index.faiss was obtained: "not loaded", "loaded" or "rebuilt (<reason>)"."""
        return self.indexes.state

    @property
    def version(self) -> int:
        """The current memory version (the number of the last committed event)."""
        return self.session.version

    def save_index(self) -> None:
        """Write index.faiss now (a long-running writer may call this at checkpoints)."""
        self.indexes.save()

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Apply many changes in one transaction (see `Session.batch`): each keeps its own event and
        version; all are committed together, or none when the block raises."""
        try:
            with self.session.batch():
                yield
        except BaseException:
            self.indexes.invalidate()  # they may have caught up with rows that were rolled back
            raise

    # ---- run state (`Session`) ---------------------------------------------------------------
    def kv_get(self, key: str, default: Any = None) -> Any:
        """A JSON value from the key-value table (run state such as the current checkpoint)."""
        return self.session.kv_get(key, default)

    def kv_set(self, key: str, value: Any) -> None:
        """Set a JSON value. Run state, not memory: no event, no new version."""
        self.session.kv_set(key, value)

    # ---- insights (`Insights`) ---------------------------------------------------------------
    def get(self, insight_id: str) -> Insight:
        """The insight with this id; KeyError if there is none."""
        return self.insights.get(insight_id)

    def list_insights(
        self,
        status: InsightStatus | None = None,
        sort: str = "utility",
        limit: int | None = None,
        family: str | None = None,
    ) -> list[Insight]:
        """Insights, optionally of one status / family, sorted by utility, uses or recency."""
        return self.insights.list_insights(status, sort, limit, family)

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
        solution: str = "",
    ) -> tuple[Insight, bool]:
        """Add a candidate item; True if it is new, False if it merged into a near-duplicate (a worked
        example: the same problem's). `solution` is a worked example's verified solution."""
        return self.insights.add(
            text, kind, applies_when, family, source_episode, source_task, model, meta, status, solution
        )

    def edit(self, insight_id: str, text: str) -> Insight:
        """Replace the text (cleaned, capped, re-embedded); its statistics stay."""
        return self.insights.edit(insight_id, text)

    def record_admission(self, insight_id: str, admitted: bool, reason: str = "") -> Insight:
        """The admission test's verdict (see `Insights.record_admission`)."""
        return self.insights.record_admission(insight_id, admitted, reason)

    def set_status(self, insight_id: str, status: InsightStatus, reason: str = "") -> Insight:
        return self.insights.set_status(insight_id, status, reason)

    def mark_absorbed(self, insight_id: str, checkpoint: str | None = None) -> Insight:
        """Record that the insight was folded into the weights (see `Insights.mark_absorbed`)."""
        return self.insights.mark_absorbed(insight_id, checkpoint)

    def retire_if_harmful(self) -> list[Insight]:
        """Retire the active insights confidently harmful (see `Insights.retire_if_harmful`)."""
        return self.insights.retire_if_harmful()

    # ---- credit and baselines (`CreditLedger`) -----------------------------------------------
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
        return self.ledger.credit(insight_ids, task, reward, baseline, episode_id)

    def task_stats(self, insight_id: str) -> list[TaskStats]:
        """An insight's credit per task."""
        return self.ledger.task_stats(insight_id)

    def set_baseline(self, task_id: str, rate: float, n: int) -> None:
        """The task's success rate without insights, from `n` samples."""
        self.ledger.set_baseline(task_id, rate, n)

    def baseline(self, task_id: str) -> float | None:
        """The stored baseline success rate of a task, or None if never estimated."""
        return self.ledger.baseline(task_id)

    def baseline_info(self, task_id: str) -> tuple[float, int] | None:
        return self.ledger.baseline_info(task_id)

    # ---- search and retrieval (`Recall`) -----------------------------------------------------
    def search(
        self, text: str, k: int = 10, status: InsightStatus | None = None
    ) -> list[tuple[Insight, float]]:
        """Plain cosine similarity of insight texts to `text`, best first (any status unless given)."""
        return self.recall.search(text, k, status)

    def retrieve(
        self, task: Task, k: int | None = None, train: bool = False, token_budget: int | None = None
    ) -> list[Insight]:
        """The active insights to put in the prompt for `task` (see `Recall.retrieve`)."""
        return self.recall.retrieve(task, k, train, token_budget)

    def explain_retrieval(
        self, task: Task, k: int | None = None, train: bool = False, token_budget: int | None = None
    ) -> list[ScoredInsight]:
        """`retrieve` with the parts of each score (utility, effective uses, similarity, bonus)."""
        return self.recall.explain_retrieval(task, k, train, token_budget)

    # ---- attempts (`Attempts`) ---------------------------------------------------------------
    def add_attempt(self, attempt: Attempt) -> Attempt:
        """Keep a verified attempt (indexed by its task text). The same id, or the same text for
        the same task, is stored once; the stored record is returned."""
        return self.attempts.add(attempt)

    def get_attempt(self, attempt_id: str) -> Attempt:
        return self.attempts.get(attempt_id)

    def list_attempts(self, task_id: str | None = None, limit: int | None = None) -> list[Attempt]:
        return self.attempts.list_attempts(task_id, limit)

    def similar_attempts(
        self, text: str, k: int = 1, family: str | None = None
    ) -> list[tuple[Attempt, float]]:
        """Stored attempts whose task text is most similar to `text` (a task prompt), best first."""
        return self.attempts.similar(text, k, family)

    # ---- episodes (`Episodes`) ---------------------------------------------------------------
    def add_episode(self, episode: Episode | dict[str, Any]) -> Episode:
        """Store (or replace) an episode record."""
        return self.episodes.add(episode)

    def get_episode(self, episode_id: str) -> Episode:
        """The episode with this id; KeyError if there is none."""
        return self.episodes.get(episode_id)

    def list_episodes(self, failed_only: bool = False, limit: int | None = None) -> list[Episode]:
        """Episodes, oldest first (the last `limit` when given)."""
        return self.episodes.list_episodes(failed_only, limit)

    def episode_summaries(self) -> list[EpisodeSummary]:
        """Every episode's summary (spend, outcome, insights used; no tree), oldest first."""
        return self.episodes.summaries()

    # ---- versions and transfer (`History`) ---------------------------------------------------
    def events(self, since_version: int = 0) -> list[MemoryEvent]:
        """Committed events after `since_version`, oldest first (row snapshots left out)."""
        return self.history.events(since_version)

    def versions(self) -> list[MemoryEvent]:
        """One entry per memory version, oldest first."""
        return self.history.events(0)

    def diff(self, v1: int, v2: int) -> MemoryDiff:
        """Insights added, removed and changed from version v1 to v2."""
        return self.history.diff(v1, v2)

    def rollback(self, version: int) -> int:
        """Restore the insights and their per-task credit as they were at `version` (see `History`);
        returns the new version."""
        return self.history.rollback(version)

    def export_jsonl(self, path: str | Path) -> int:
        """Write the memory as JSON lines (see `memory.transfer`); returns the lines written."""
        return self.history.export_jsonl(path)

    def import_jsonl(self, path: str | Path) -> ImportReport:
        """Merge a JSON-lines export into this memory in one transaction (see `memory.transfer`)."""
        return self.history.import_jsonl(path)
