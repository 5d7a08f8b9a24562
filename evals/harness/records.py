"""What a harness run is asked to do and what it records: specs, per-run records, aggregates, results.

All are pydantic models, so a results.json reads back into them (`report.load_results`) and a run
can be resumed or re-reported. `failed_record` is the record of a method that raised on a cell.
"""

from __future__ import annotations

from typing import Any

from insightloop.agent.learn.reports import EvalReport
from insightloop.core.config import Config
from insightloop.core.task import Task
from pydantic import BaseModel, Field


class EvalSpec(BaseModel):
    """What to run. With `config` and `overrides`, everything needed to reproduce a results.json."""

    suites: list[str]
    methods: list[str]
    n_train: int = Field(5, ge=1)
    n_test: int = Field(20, ge=1)
    budget: int = Field(30, ge=1, description="learning rollouts per method and run")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    config: str | None = None
    overrides: list[str] = Field(default_factory=list)


class RunSpec(BaseModel):
    """One (suite, seed) cell: the split every method of that cell shares, and the seeded config."""

    suite: str
    seed: int
    budget: int
    train: list[Task]
    test: list[Task]
    cfg: Config


class MethodResult(BaseModel):
    """What a method hands back: its test evaluation and anything worth recording."""

    report: EvalReport
    detail: dict[str, Any] = Field(default_factory=dict)


class RunRecord(BaseModel):
    """One method on one (suite, seed): accuracy, spend and time."""

    suite: str
    method: str
    seed: int
    budget: int
    accuracy: float
    scores: list[float]
    answers: list[str | None] = Field(default_factory=list)
    rollouts: int
    learn_prompt_tokens: int
    learn_completion_tokens: int
    prompt_tokens_per_problem: float
    train_ids: list[str]
    test_ids: list[str]
    learn_seconds: float
    eval_seconds: float
    seconds: float
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Aggregate(BaseModel):
    """Mean over seeds of one method on one suite, with a 95 % t-interval half-width, and the most
    frequent test answer with its share of the test problems (a method that collapsed onto one label
    shows it here; nan when the records carry no answers)."""

    suite: str
    method: str
    seeds: int
    accuracy: float
    ci95: float
    rollouts: float
    prompt_tokens_per_problem: float
    seconds: float
    failed: int = 0
    top_answer: str | None = None
    top_share: float = float("nan")


class Lift(BaseModel):
    """A method against `baseline` (the unlearned model, or the method it adds to) on one suite, paired
    per test problem over all seeds: the mean difference, its 95 % paired-bootstrap interval, and
    McNemar's exact p-value."""

    suite: str
    method: str
    baseline: str = "none"
    n: int
    lift: float
    lo: float
    hi: float
    mcnemar_p: float


class Results(BaseModel):
    """The whole run: spec, config, machine, every record, the aggregates and the paired lifts."""

    spec: EvalSpec
    config: dict[str, Any]
    machine: dict[str, Any]
    records: list[RunRecord] = Field(default_factory=list)
    aggregates: list[Aggregate] = Field(default_factory=list)
    lifts: list[Lift] = Field(default_factory=list)
    started: float = 0.0
    wall_seconds: float = 0.0


def failed_record(run: RunSpec, name: str, error: BaseException, seconds: float) -> RunRecord:
    """A method that raised on a cell: recorded with its error, accuracy 0, left out of aggregates."""
    return RunRecord(
        suite=run.suite,
        method=name,
        seed=run.seed,
        budget=run.budget,
        accuracy=0.0,
        scores=[],
        rollouts=0,
        learn_prompt_tokens=0,
        learn_completion_tokens=0,
        prompt_tokens_per_problem=0.0,
        train_ids=[t.id for t in run.train],
        test_ids=[t.id for t in run.test],
        learn_seconds=0.0,
        eval_seconds=0.0,
        seconds=round(seconds, 3),
        error=f"{type(error).__name__}: {error}",
    )
