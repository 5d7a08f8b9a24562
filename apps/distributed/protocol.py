"""The memory writer's protocol: what workers send the one writer, and what it answers.

Workers never open the memory. They send typed records: writes (`WriteOp`: credit, a verified
attempt, an episode, a baseline, a retirement pass, verified chains), buffered into a `WriteBatch`,
and requests that need an answer (`Request`: retrieval, similar attempts, a baseline, adding an
insight, an admission verdict, the version). Every exchange carries the worker's pending batch and at
most one request; the writer applies the batch in one transaction, then answers, so a worker always
reads its own writes and the writer applies each worker's changes in the order that worker made them.

A batch is numbered per worker (`seq`); the writer skips one it has already applied, so resending a
batch whose answer was lost never applies it twice.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from insightloop.core.episode import Chain, Episode
from insightloop.core.task import Task
from insightloop.memory.records import Attempt, Insight, InsightKind
from pydantic import BaseModel, Field

# -- writes: applied in order, in one transaction per batch ------------------------------------------


class CreditOp(BaseModel):
    """`Memory.credit`: reward − baseline to each insight that was in the episode's prompt."""

    op: Literal["credit"] = "credit"
    insight_ids: list[str]
    task: Task
    reward: float
    baseline: float
    episode_id: str | None = None


class AttemptOp(BaseModel):
    """`Memory.add_attempt`: a verified attempt kept for later contrast."""

    op: Literal["attempt"] = "attempt"
    attempt: Attempt


class EpisodeOp(BaseModel):
    """`Memory.add_episode`: the episode record (what the console shows and the fold learns from)."""

    op: Literal["episode"] = "episode"
    episode: Episode


class BaselineOp(BaseModel):
    """`Memory.set_baseline`: a task's no-insight success rate from `n` samples."""

    op: Literal["baseline"] = "baseline"
    task_id: str
    rate: float = Field(ge=0.0, le=1.0)
    n: int = Field(ge=0)


class RetireOp(BaseModel):
    """`Memory.retire_if_harmful`: retire the insights confidently harmful so far."""

    op: Literal["retire"] = "retire"


class ChainsOp(BaseModel):
    """Verified reasoning chains for the run's chain buffer (the fold's off-policy data)."""

    op: Literal["chains"] = "chains"
    chains: list[Chain]


WriteOp = Annotated[CreditOp | AttemptOp | EpisodeOp | BaselineOp | RetireOp | ChainsOp, Field(discriminator="op")]


class WriteBatch(BaseModel):
    """One worker's buffered writes, numbered per worker (`source`) from 1."""

    source: str
    seq: int = Field(ge=1)
    ops: list[WriteOp] = Field(default_factory=list)


# -- requests: answered after the batch they come with -----------------------------------------------


class RetrieveRequest(BaseModel):
    """`Memory.retrieve`: the insights to put in a task's prompt."""

    op: Literal["retrieve"] = "retrieve"
    task: Task
    k: int
    train: bool
    token_budget: int | None = None


class SimilarRequest(BaseModel):
    """`Memory.similar_attempts`: stored attempts whose task is most like `text`."""

    op: Literal["similar"] = "similar"
    text: str
    k: int
    family: str | None = None


class BaselineRequest(BaseModel):
    """`Memory.baseline`: the stored no-insight success rate of a task."""

    op: Literal["baseline"] = "baseline"
    task_id: str


class AddInsightRequest(BaseModel):
    """`Memory.add_insight`: a candidate item; the writer decides whether it is new or a merge."""

    op: Literal["add_insight"] = "add_insight"
    text: str
    kind: InsightKind
    applies_when: str = ""
    family: str | None = None
    source_episode: str | None = None
    source_task: str | None = None
    model: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)
    solution: str = ""


class AdmissionRequest(BaseModel):
    """`Memory.record_admission`: the admission test's verdict on an insight."""

    op: Literal["admission"] = "admission"
    insight_id: str
    admitted: bool
    reason: str = ""


class ListInsightsRequest(BaseModel):
    """Every stored insight (a fold's re-test reads them)."""

    op: Literal["list_insights"] = "list_insights"


class AbsorbRequest(BaseModel):
    """Mark an insight folded into the weights (a fold's re-test)."""

    op: Literal["absorb"] = "absorb"
    insight_id: str


class VersionRequest(BaseModel):
    """Only the memory version (it comes with every reply)."""

    op: Literal["version"] = "version"


Request = Annotated[
    RetrieveRequest | SimilarRequest | BaselineRequest | AddInsightRequest | AdmissionRequest
    | ListInsightsRequest | AbsorbRequest | VersionRequest,
    Field(discriminator="op"),
]

# -- answers -----------------------------------------------------------------------------------------


class InsightsAnswer(BaseModel):
    """Insights: retrieved, listed, or the one a request changed (`created`: an `add_insight` that
    stored a new item rather than merging into a near-duplicate)."""

    op: Literal["insights"] = "insights"
    insights: list[Insight] = Field(default_factory=list)
    created: bool | None = None


class AttemptHit(BaseModel):
    """A stored attempt and the similarity of its task to the query."""

    attempt: Attempt
    score: float


class AttemptsAnswer(BaseModel):
    op: Literal["attempts"] = "attempts"
    hits: list[AttemptHit] = Field(default_factory=list)


class BaselineAnswer(BaseModel):
    op: Literal["baseline"] = "baseline"
    rate: float | None = None


Answer = Annotated[InsightsAnswer | AttemptsAnswer | BaselineAnswer, Field(discriminator="op")]


class Reply(BaseModel):
    """The writer's answer to one exchange: the memory version after it, how many of the batch's
    writes it applied (0 for a batch applied before), and the request's answer, if it asked one."""

    version: int
    applied: int = 0
    answer: Answer | None = None


class WriterStats(BaseModel):
    """What the writer has done since it started: for status lines and the capacity benchmark."""

    batches: int = 0
    duplicates: int = 0
    ops: dict[str, int] = Field(default_factory=dict)
    requests: dict[str, int] = Field(default_factory=dict)
    busy_seconds: float = 0.0
    version: int = 0
