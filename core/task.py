"""Core task types: `Task`, `Reward` and the `Verifier` protocol.

A verifier parses the model's answer and checks it; it never executes model text.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field


class Task(BaseModel):
    """One problem. `answer` is the reference (None for unlabeled inference tasks);
    `verifier` names how answers are checked (`evals.verifiers.VERIFIER_NAMES`); `meta` carries
    suite-specific data."""

    model_config = ConfigDict(frozen=True)
    id: str = Field(min_length=1)
    family: str
    prompt: str = Field(min_length=1)
    answer: str | None = None
    verifier: str = "exact"
    meta: dict[str, Any] = Field(default_factory=dict)


class Reward(BaseModel):
    """The verdict on one completion: score in [0, 1], the answer parsed out, and any parse error."""

    score: float = Field(ge=0.0, le=1.0)
    parsed_answer: str | None = None
    error: str | None = None

    @property
    def correct(self) -> bool:
        return self.score >= 1.0


@runtime_checkable
class Verifier(Protocol):
    """Scores a completion for a task.

    Contract: never raises on bad model output (a malformed answer scores 0 with `error` set) and
    never executes model text. `extract` returns the final answer string or None.
    """

    def extract(self, task: Task, completion: str) -> str | None: ...

    def verify(self, task: Task, completion: str) -> Reward: ...


@runtime_checkable
class ClosedAnswers(Protocol):
    """A verifier whose tasks may have a closed answer set: labels (Yes/No) or option letters.

    Contract: `options(task)` returns every answer the verifier would accept for some reference, in
    the form a solver should write after `Answer:`, or None when the set is open or unknown.
    """

    def options(self, task: Task) -> tuple[str, ...] | None: ...
