"""The memory as a worker sees it: the `Memory` protocol by proxy to the one writer.

`ProxyMemory` is what a worker's `Learner` writes through. Writes whose result the loop does not
need (credit, attempts, episodes, baselines, retirement) are buffered and sent in batches; calls
that need the writer's answer (retrieval, similar attempts, a baseline, adding an insight and its
admission verdict, the version) go at once and carry the buffered writes with them, so the writer
applies them first: a worker always reads its own writes, and its writes reach the memory in the
order it made them. A worker flushes at the end of every episode, so an episode's writes are in the
memory before its task is committed.

Buffered calls return what is known without the writer: `credit` the ids sent, `add_attempt` and
`add_episode` the record sent, `retire_if_harmful` nothing (the learning loop uses none of these
results). If an exchange fails, the buffered writes are dropped and the error propagates: the
episode fails and is retried whole.

`WriterInsights` is the part a fold's insight re-test needs, over the same exchanges.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from insightloop.apps.distributed.protocol import (
    AbsorbRequest,
    AddInsightRequest,
    AdmissionRequest,
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
)
from insightloop.core.episode import Chain, Episode
from insightloop.core.task import Task
from insightloop.memory.records import Attempt, Insight

Transport = Callable[[WriteBatch | None, Request | None], Reply]
"""One exchange with the writer: (pending writes, request) -> reply. In-process in tests
(`MemoryService.exchange`), a Ray actor call across processes."""


class ProxyMemory:
    """The `Memory` protocol over exchanges with the one writer (see the module docstring)."""

    def __init__(self, transport: Transport, source: str, max_pending: int = 64) -> None:
        self.transport = transport
        self.source = source
        self.max_pending = max_pending
        self.exchanges = 0  # exchanges made, and writes sent in them (counters for logs and benchmarks)
        self.sent = 0
        self._pending: list[WriteOp] = []
        self._seq = 0

    # -- the exchange --------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        """Writes buffered, not yet sent."""
        return len(self._pending)

    def _exchange(self, request: Request | None) -> Reply:
        batch = None
        if self._pending:
            self._seq += 1
            batch = WriteBatch(source=self.source, seq=self._seq, ops=self._pending)
            self.sent += len(self._pending)
            self._pending = []  # sent or lost with the exchange: never sent twice
        self.exchanges += 1
        return self.transport(batch, request)

    def _buffer(self, op: WriteOp) -> None:
        self._pending.append(op)
        if len(self._pending) >= self.max_pending:
            self.flush()

    def flush(self) -> int:
        """Send the buffered writes now; returns how many were sent."""
        sent = len(self._pending)
        if sent:
            self._exchange(None)
        return sent

    def discard(self) -> int:
        """Drop the buffered writes (an episode that failed); returns how many were dropped."""
        dropped, self._pending = len(self._pending), []
        return dropped

    def _ask(self, request: Request) -> Any:
        return self._exchange(request).answer

    # -- reads and answered writes -------------------------------------------------------------------
    @property
    def version(self) -> int:
        return self._exchange(VersionRequest()).version

    def retrieve(self, task: Task, k: int, train: bool, token_budget: int | None) -> list[Insight]:
        answer = self._ask(RetrieveRequest(task=task, k=k, train=train, token_budget=token_budget))
        return list(_typed(answer, InsightsAnswer).insights)

    def similar_attempts(self, text: str, k: int, family: str | None) -> list[tuple[Attempt, float]]:
        answer = self._ask(SimilarRequest(text=text, k=k, family=family))
        return [(h.attempt, h.score) for h in _typed(answer, AttemptsAnswer).hits]

    def baseline(self, task_id: str) -> float | None:
        return _typed(self._ask(BaselineRequest(task_id=task_id)), BaselineAnswer).rate

    def add_insight(self, text: str, kind: str, applies_when: str, family: str | None,
                    source_episode: str | None, source_task: str | None, model: str,
                    meta: dict[str, Any], *, solution: str = "") -> tuple[Insight, bool]:
        """Answered at once: the writer decides whether the item is new or merges into a near-duplicate."""
        request = AddInsightRequest(text=text, kind=kind, applies_when=applies_when, family=family,  # type: ignore[arg-type]
                                    source_episode=source_episode, source_task=source_task, model=model,
                                    meta=meta, solution=solution)
        answer = _typed(self._ask(request), InsightsAnswer)
        return answer.insights[0], bool(answer.created)

    def record_admission(self, insight_id: str, admitted: bool, reason: str) -> Insight:
        answer = self._ask(AdmissionRequest(insight_id=insight_id, admitted=admitted, reason=reason))
        return _typed(answer, InsightsAnswer).insights[0]

    # -- buffered writes -----------------------------------------------------------------------------
    def credit(self, insight_ids: list[str], task: Task, reward: float, baseline: float,
               episode_id: str) -> list[str]:
        """Buffered; returns the ids sent (the writer skips any no longer in memory)."""
        ids = list(dict.fromkeys(insight_ids))
        if ids:
            self._buffer(CreditOp(insight_ids=ids, task=task, reward=reward, baseline=baseline,
                                  episode_id=episode_id))
        return ids

    def add_attempt(self, attempt: Attempt) -> Attempt:
        self._buffer(AttemptOp(attempt=attempt))
        return attempt

    def add_episode(self, ep: Episode) -> Episode:
        self._buffer(EpisodeOp(episode=ep))
        return ep

    def set_baseline(self, task_id: str, rate: float, n: int) -> None:
        self._buffer(BaselineOp(task_id=task_id, rate=rate, n=n))

    def retire_if_harmful(self) -> list[Insight]:
        self._buffer(RetireOp())
        return []

    def add_chains(self, chains: Sequence[Chain]) -> None:
        """Verified chains for the run's chain buffer (sent with the next exchange)."""
        if chains:
            self._buffer(ChainsOp(chains=list(chains)))


class WriterInsights:
    """The insight store a fold's re-test needs (`rl.fold.InsightStore`), through the writer."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    def list_insights(self) -> list[Insight]:
        return list(_typed(self.transport(None, ListInsightsRequest()).answer, InsightsAnswer).insights)

    def mark_absorbed(self, insight_id: str) -> Insight:
        answer = self.transport(None, AbsorbRequest(insight_id=insight_id)).answer
        return _typed(answer, InsightsAnswer).insights[0]


def _typed(answer: Any, kind: type) -> Any:
    """The answer, checked to be of the kind the request asks for."""
    if not isinstance(answer, kind):
        raise TypeError(f"the memory writer answered {type(answer).__name__}, expected {kind.__name__}")
    return answer
