"""Typed events the learning loop emits; the CLI, logs, daemon and console subscribe to them.

The core calls one `on_event(event)` callback and never formats anything for display. Every event
is a pydantic record with a `kind` tag, so a subscriber can switch on `kind` or `isinstance`, and
logs can write `event.model_dump_json()` as one JSON line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

from insightloop.core.episode import Episode
from pydantic import BaseModel, Field


class Event(BaseModel):
    """Base record: a kind tag and a wall-clock timestamp."""

    kind: str
    ts: float = Field(default_factory=time.time)


class EpisodeStarted(Event):
    """A task's episode began: the training loop, an evaluation or a plain solve."""

    kind: Literal["episode_started"] = "episode_started"
    episode_id: str
    task_id: str
    family: str = ""
    strategy: str = ""
    train: bool = False
    insights: list[str] = Field(default_factory=list, description="ids of the memory items in the prompt")


class EpisodeFinished(Event):
    """A task's episode ended; `correct` and `reward` are None for an unlabeled task."""

    kind: Literal["episode_finished"] = "episode_finished"
    episode_id: str
    task_id: str
    train: bool = False
    answer: str | None = None
    correct: bool | None = None
    reward: float | None = None
    rollouts: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float
    # The finished record itself, for in-process subscribers (saving, memory); left out of dumps.
    episode: Episode | None = Field(None, exclude=True, repr=False)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class InsightProposed(Event):
    kind: Literal["insight_proposed"] = "insight_proposed"
    text: str
    task_id: str
    episode_id: str
    pair_kind: str


class InsightAdmitted(Event):
    kind: Literal["insight_admitted"] = "insight_admitted"
    insight_id: str
    text: str
    task_id: str
    episode_id: str
    created: bool = True


class InsightRejected(Event):
    kind: Literal["insight_rejected"] = "insight_rejected"
    text: str
    task_id: str
    reason: str


class Credited(Event):
    kind: Literal["credited"] = "credited"
    task_id: str
    episode_id: str
    insight_ids: list[str]
    reward: float
    baseline: float

    @property
    def delta(self) -> float:
        return self.reward - self.baseline


class ChainSynthesized(Event):
    kind: Literal["chain_synthesized"] = "chain_synthesized"
    task_id: str
    episode_id: str
    verified: bool


class BudgetUpdate(Event):
    kind: Literal["budget"] = "budget"
    rollouts: int
    max_rollouts: int | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0


class FoldStarted(Event):
    kind: Literal["fold_started"] = "fold_started"
    episodes: int


class FoldFinished(Event):
    kind: Literal["fold_finished"] = "fold_finished"
    episodes: int
    ok: bool
    detail: dict[str, Any] = Field(default_factory=dict)


EventSink = Callable[[Event], None]


def ignore(_: Event) -> None:
    """The default sink: drop events."""
