"""The one memory writer: owns the run's `MemoryStore` and serves every worker's exchanges.

SQLite stays the single source of truth with a single writer: this service is the only code that
opens `memory.sqlite` for writing while workers run (the driver starts it as one Ray actor on its own
node, next to the run directory). An exchange (see `protocol`) applies the worker's batch through
the store's own methods inside one transaction (`MemoryStore.batch`): each write keeps its own event
and version, so the version history is exactly what a single process would have written, and one
commit makes the batch durable. A batch that raises is rolled back whole and the error goes back to
the worker, whose episode then fails and is retried. Then the request, if any, is answered.
"""

from __future__ import annotations

import time
from pathlib import Path

from insightloop.apps.distributed.protocol import (
    AbsorbRequest,
    AddInsightRequest,
    AdmissionRequest,
    Answer,
    AttemptHit,
    AttemptOp,
    AttemptsAnswer,
    BaselineAnswer,
    BaselineOp,
    BaselineRequest,
    ChainsOp,
    CreditOp,
    EpisodeOp,
    InsightsAnswer,
    ListInsightsRequest,
    Reply,
    Request,
    RetireOp,
    RetrieveRequest,
    SimilarRequest,
    VersionRequest,
    WriteBatch,
    WriteOp,
    WriterStats,
)
from insightloop.apps.runtime import Runtime
from insightloop.core.config import Config
from insightloop.memory.chains import append_chains
from insightloop.memory.store import MemoryStore


class ProtocolError(ValueError):
    """An exchange the writer cannot serve (an unknown operation)."""


class MemoryService:
    """Applies workers' write batches and answers their requests over one `MemoryStore`."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self._last_seq: dict[str, int] = {}  # per worker: the last batch applied
        self._stats = WriterStats()

    @classmethod
    def open(cls, run_dir: str | Path, cfg: Config) -> MemoryService:
        """The writer of `run_dir`'s memory, with the embedder the config names (the runtime factory)."""
        return cls(Runtime(cfg, run_dir).memory())

    def exchange(self, batch: WriteBatch | None = None, request: Request | None = None) -> Reply:
        """Apply `batch` (one transaction), then answer `request`."""
        start = time.perf_counter()
        try:
            applied = self.apply(batch) if batch is not None else 0
            answer = self.answer(request) if request is not None else None
            return Reply(version=self.store.version, applied=applied, answer=answer)
        finally:
            self._stats.busy_seconds += time.perf_counter() - start

    def apply(self, batch: WriteBatch) -> int:
        """Apply a batch's writes in order inside one transaction; returns how many were applied
        (0 for a batch this writer has applied before: a resend)."""
        if batch.seq <= self._last_seq.get(batch.source, 0):
            self._stats.duplicates += 1
            return 0
        if batch.ops:
            with self.store.batch():
                for op in batch.ops:
                    self._write(op)
        self._last_seq[batch.source] = batch.seq
        self._stats.batches += 1
        for op in batch.ops:
            self._stats.ops[op.op] = self._stats.ops.get(op.op, 0) + 1
        return len(batch.ops)

    def _write(self, op: WriteOp) -> None:
        s = self.store
        if isinstance(op, CreditOp):
            s.credit(op.insight_ids, op.task, op.reward, op.baseline, op.episode_id)
        elif isinstance(op, AttemptOp):
            s.add_attempt(op.attempt)
        elif isinstance(op, EpisodeOp):
            s.add_episode(op.episode)
        elif isinstance(op, BaselineOp):
            s.set_baseline(op.task_id, op.rate, op.n)
        elif isinstance(op, RetireOp):
            s.retire_if_harmful()
        elif isinstance(op, ChainsOp):
            # The chain buffer is a file beside the memory; appended here so it has one writer too.
            if op.chains and s.run_dir is not None:
                append_chains(s.run_dir, op.chains)
        else:
            raise ProtocolError(f"unknown write {op!r}")

    def answer(self, request: Request) -> Answer | None:
        """The answer to one request (after the batch it came with)."""
        self._stats.requests[request.op] = self._stats.requests.get(request.op, 0) + 1
        s = self.store
        if isinstance(request, RetrieveRequest):
            found = s.retrieve(request.task, request.k, request.train, request.token_budget)
            return InsightsAnswer(insights=found)
        if isinstance(request, SimilarRequest):
            hits = s.similar_attempts(request.text, request.k, request.family)
            return AttemptsAnswer(hits=[AttemptHit(attempt=a, score=score) for a, score in hits])
        if isinstance(request, BaselineRequest):
            return BaselineAnswer(rate=s.baseline(request.task_id))
        if isinstance(request, AddInsightRequest):
            r = request
            ins, created = s.add_insight(r.text, r.kind, r.applies_when, r.family, r.source_episode,
                                         r.source_task, r.model, r.meta, solution=r.solution)
            return InsightsAnswer(insights=[ins], created=created)
        if isinstance(request, AdmissionRequest):
            return InsightsAnswer(insights=[s.record_admission(request.insight_id, request.admitted,
                                                               request.reason)])
        if isinstance(request, ListInsightsRequest):
            return InsightsAnswer(insights=s.list_insights())
        if isinstance(request, AbsorbRequest):
            return InsightsAnswer(insights=[s.mark_absorbed(request.insight_id)])
        if isinstance(request, VersionRequest):
            return None
        raise ProtocolError(f"unknown request {request!r}")

    def stats(self) -> WriterStats:
        """Batches, writes and requests served so far, and the time spent on them."""
        return self._stats.model_copy(update={"version": self.store.version}, deep=True)

    def ping(self) -> int:
        """The memory version (a liveness check that reads nothing else)."""
        return self.store.version

    def close(self) -> None:
        """Save the index and close the store."""
        self.store.close()
