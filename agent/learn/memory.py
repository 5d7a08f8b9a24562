"""What the learning loop needs from the memory: the `Memory` protocol (`memory.store.MemoryStore`
implements it; a fake can stand in for tests)."""

from __future__ import annotations

from typing import Any, Protocol

from insightloop.core.episode import Episode
from insightloop.core.task import Task
from insightloop.memory.records import Attempt, Insight


class Memory(Protocol):
    """The part of `memory.store.MemoryStore` the loop uses (a fake can stand in for tests).

    Contract: `credit` returns the ids it credited (unknown ids are skipped, not an error);
    `add_insight` returns the stored insight and whether it is new (False: merged into a
    near-duplicate); `record_admission`, `add_attempt` and `add_episode` return the stored record
    (the episode is the only record the fold learns from); `retire_if_harmful` returns the insights
    it retired; `baseline` is the stored no-insight success rate in [0, 1], or None when the task
    has none.
    """

    @property
    def version(self) -> int: ...

    def retrieve(self, task: Task, k: int, train: bool, token_budget: int | None) -> list[Insight]: ...

    def credit(self, insight_ids: list[str], task: Task, reward: float, baseline: float,
               episode_id: str) -> list[str]: ...

    def add_insight(self, text: str, kind: str, applies_when: str, family: str | None,
                    source_episode: str | None, source_task: str | None, model: str,
                    meta: dict[str, Any], *, solution: str = "") -> tuple[Insight, bool]: ...

    def record_admission(self, insight_id: str, admitted: bool, reason: str) -> Insight: ...

    def retire_if_harmful(self) -> list[Insight]: ...

    def add_attempt(self, attempt: Attempt) -> Attempt: ...

    def similar_attempts(self, text: str, k: int, family: str | None) -> list[tuple[Attempt, float]]: ...

    def add_episode(self, ep: Episode) -> Episode: ...

    def set_baseline(self, task_id: str, rate: float, n: int) -> None: ...

    def baseline(self, task_id: str) -> float | None: ...
