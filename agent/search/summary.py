"""Figures for a set of solved episodes: accuracy over labeled tasks, spend per task, one row per task."""

from __future__ import annotations

from collections.abc import Sequence

from insightloop.core.episode import Episode
from pydantic import BaseModel


class TaskRow(BaseModel):
    """One task's line in a solve report."""

    task_id: str
    answer: str | None
    reference: str | None
    correct: bool | None
    rollouts: int
    tokens: int
    seconds: float


class SolveSummary(BaseModel):
    """Figures for a set of episodes: accuracy over labeled tasks, spend per task."""

    strategy: str
    tasks: int
    labeled: int
    correct: int
    accuracy: float | None
    vote_accuracy: float | None
    rollouts: int
    tokens: int
    seconds: float
    rollouts_per_task: float
    tokens_per_task: float
    seconds_per_task: float
    rows: list[TaskRow]


def summarize(episodes: Sequence[Episode], strategy: str, seconds: float | None = None) -> SolveSummary:
    """Accuracy (best attempt, verified) and vote accuracy over labeled tasks, plus spend per task.

    `seconds` is the run's wall time; by default the sum of episode times (they overlap in a batch).
    """
    rows = [TaskRow(task_id=e.task.id, answer=e.answer, reference=e.task.answer,
                    correct=e.correct if e.reward is not None else None, rollouts=e.rollouts,
                    tokens=e.prompt_tokens + e.completion_tokens, seconds=round(e.seconds, 3))
            for e in episodes]
    labeled = [e for e in episodes if e.reward is not None]
    n = max(len(episodes), 1)
    wall = sum(e.seconds for e in episodes) if seconds is None else seconds
    correct = sum(e.correct for e in labeled)
    voted = sum(bool(e.meta.get("vote_correct")) for e in labeled)
    return SolveSummary(
        strategy=strategy, tasks=len(episodes), labeled=len(labeled), correct=correct,
        accuracy=correct / len(labeled) if labeled else None,
        vote_accuracy=voted / len(labeled) if labeled else None,
        rollouts=sum(r.rollouts for r in rows), tokens=sum(r.tokens for r in rows), seconds=round(wall, 3),
        rollouts_per_task=sum(r.rollouts for r in rows) / n, tokens_per_task=sum(r.tokens for r in rows) / n,
        seconds_per_task=round(wall / n, 3), rows=rows)

