"""The shared test measurement: every method's test problems are solved the same way.

`evaluate` runs the `sample` strategy with `cfg.loop.eval_samples` attempts at
`cfg.loop.eval_temperature` (as `Learner.eval_search` builds it), with whatever frozen prompt
additions a method learned, and is not charged to the method's learning budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from insightloop.agent.learn.reports import EvalItem, EvalReport
from insightloop.agent.search.solve import solve_many
from insightloop.core.budget import Budget
from insightloop.core.config import Config, SearchConfig
from insightloop.core.episode import Episode
from insightloop.core.lm import LM
from insightloop.core.task import Task
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.records import RunSpec

InsightsFor = Callable[[Task], Sequence[str]]


def eval_search(cfg: Config) -> SearchConfig:
    """The test-time search, as `Learner.eval_search` builds it: whole samples, greedy by default."""
    return cfg.search.model_copy(
        update={
            "strategy": "sample",
            "rollouts": cfg.loop.eval_samples,
            "temperature": cfg.loop.eval_temperature,
        }
    )


def report_of(episodes: Sequence[Episode], seconds: float, use_memory: bool = True) -> EvalReport:
    """The evaluation report of solved test episodes (mean reward of each episode's attempts)."""
    return EvalReport(use_memory=use_memory, items=[EvalItem.of(ep) for ep in episodes], seconds=seconds)


def evaluate(
    ctx: Context, run: RunSpec, insights_for: InsightsFor | None = None, lm: LM | None = None
) -> EvalReport:
    """The shared test measurement: frozen prompt additions, not charged to the learning budget."""
    start = ctx.clock()
    eps = solve_many(
        run.test,
        lm or ctx.policy,
        eval_search(run.cfg),
        insights_for,
        budget=Budget().start(ctx.clock),
        clock=ctx.clock,
    )
    return report_of(eps, ctx.clock() - start, insights_for is not None)
