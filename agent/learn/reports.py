"""What learning and evaluation report: training spend and outcomes, per-item evaluation scores."""

from __future__ import annotations

from collections.abc import Sequence

from insightloop.core.episode import Episode
from pydantic import BaseModel, Field


class TrainReport(BaseModel):
    """What a `train` call did and spent."""

    episodes: int = 0
    solved: int = 0
    rollouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    insights_proposed: int = 0
    insights_admitted: int = 0
    insights_rejected: int = 0
    rejections: dict[str, int] = Field(default_factory=dict)
    analyses: int = 0
    analyses_failed: int = 0
    chains_tried: int = 0
    chains_verified: int = 0
    folds: int = 0
    seconds: float = 0.0


class EvalItem(BaseModel):
    """One evaluation problem: its score (mean over attempts), the answer chosen and what it cost."""

    task_id: str
    score: float
    correct: bool
    rollouts: int
    prompt_tokens: int
    insight_ids: list[str] = Field(default_factory=list)
    answer: str | None = None

    @classmethod
    def of(cls, ep: Episode, insight_ids: Sequence[str] = ()) -> EvalItem:
        """The item of a solved evaluation episode: the mean reward of its attempts is the score."""
        return cls(task_id=ep.task.id, correct=ep.correct, rollouts=ep.rollouts,
                   score=sum(t.reward for t in ep.trajectories) / max(1, len(ep.trajectories)),
                   prompt_tokens=ep.prompt_tokens, insight_ids=list(insight_ids), answer=ep.answer)


class EvalReport(BaseModel):
    """Accuracy over the evaluated problems, with per-item scores for paired comparisons."""

    use_memory: bool
    items: list[EvalItem] = Field(default_factory=list)
    seconds: float = 0.0

    @property
    def accuracy(self) -> float:
        return sum(i.score for i in self.items) / len(self.items) if self.items else 0.0

    @property
    def rollouts(self) -> int:
        return sum(i.rollouts for i in self.items)

    @property
    def prompt_tokens_per_problem(self) -> float:
        return sum(i.prompt_tokens for i in self.items) / len(self.items) if self.items else 0.0
