"""Few-shot adaptation: learn insights from a handful of training problems, measure the lift.

`adapt(suite, n_train, n_test, budget, cfg, ...)` splits the suite by seed, measures accuracy on the
test split without memory, runs the CORE loop on the training split within the rollout budget, then
measures the test split again with the memory frozen. Both measurements use the `sample` strategy
with `cfg.loop.eval_samples` attempts at `cfg.loop.eval_temperature` (one greedy attempt by
default): cheap, and with the same decoding on both sides the per-item difference isolates the
effect of the retrieved insights. The lift's 95 % interval is a paired bootstrap over test items.
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from insightloop.agent.learn.reports import EvalReport, TrainReport
from insightloop.apps.runtime import Runtime
from insightloop.core import events as ev
from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.core.stats import mcnemar_p, paired_ci
from insightloop.evals.suites import load_suite, split
from pydantic import BaseModel, Field

SUMMARY_KEYS = ("baseline_accuracy", "adapted_accuracy", "lift", "lift_ci", "rollouts",
                "prompt_tokens_per_problem", "insights_admitted", "insights_rejected", "seconds", "n_test",
                "mcnemar_p")


class AdaptResult(BaseModel):
    """The measurement, plus the details behind it (per-item scores, the training report)."""

    suite: str
    seed: int
    n_train: int
    n_test: int
    budget: int
    eval_strategy: str
    baseline_accuracy: float
    adapted_accuracy: float
    lift: float
    lift_ci: tuple[float, float]
    mcnemar_p: float = 1.0
    rollouts: int
    prompt_tokens_per_problem: float
    baseline_prompt_tokens_per_problem: float
    insights_admitted: int
    insights_rejected: int
    seconds: float
    run_dir: str | None = None
    baseline_items: list[float] = Field(default_factory=list)
    adapted_items: list[float] = Field(default_factory=list)
    insights: list[str] = Field(default_factory=list)
    train: TrainReport = Field(default_factory=TrainReport)

    def summary(self) -> dict[str, object]:
        """The figures under the documented keys, accuracies and lift as fractions."""
        out = self.model_dump(include=set(SUMMARY_KEYS))
        out["lift_ci"] = list(self.lift_ci)
        return {k: out[k] for k in SUMMARY_KEYS}


def _result(suite: str, seed: int, budget: int, base: EvalReport, adapted: EvalReport, train: TrainReport,
            insights: list[str], seconds: float, cfg: Config, run_dir: str | None) -> AdaptResult:
    b, a = [i.score for i in base.items], [i.score for i in adapted.items]
    return AdaptResult(
        suite=suite, seed=seed, n_train=0, n_test=len(b), budget=budget,
        eval_strategy=f"sample x{cfg.loop.eval_samples} @ T={cfg.loop.eval_temperature}",
        baseline_accuracy=base.accuracy, adapted_accuracy=adapted.accuracy,
        lift=adapted.accuracy - base.accuracy, lift_ci=paired_ci(b, a, random.Random(seed)),
        mcnemar_p=mcnemar_p(b, a),
        rollouts=train.rollouts, prompt_tokens_per_problem=adapted.prompt_tokens_per_problem,
        baseline_prompt_tokens_per_problem=base.prompt_tokens_per_problem,
        insights_admitted=train.insights_admitted, insights_rejected=train.insights_rejected,
        seconds=round(seconds, 2), run_dir=run_dir, baseline_items=b, adapted_items=a, insights=insights,
        train=train)


def adapt(suite: str, n_train: int, n_test: int, budget: int, cfg: Config, run_dir: str | Path | None = None,
          seed: int = 0, on_event: ev.EventSink = ev.ignore, runtime: Runtime | None = None,
          clock: Callable[[], float] = time.time) -> AdaptResult:
    """Baseline on the test split, learn on the train split within `budget` rollouts, re-measure.

    Without `run_dir` the memory lives in a temporary directory removed at the end. A `runtime` may
    be passed in to reuse its loaded models across runs.
    """
    start = clock()
    cfg = cfg.model_copy(update={"seed": seed, "search": cfg.search.model_copy(update={"seed": seed})})
    train_tasks, test_tasks = split(load_suite(suite, seed=seed), n_train, n_test, seed, cap_test=True)
    rt = runtime or Runtime(cfg, clock=clock)
    rt.prompt_limit.check([*train_tasks, *test_tasks])  # before any model work
    with tempfile.TemporaryDirectory(prefix="insightloop-adapt-") as tmp:
        where = Path(run_dir) if run_dir is not None else Path(tmp)
        with rt.memory(where) as store:
            learner = rt.learner(store, run_dir=where, cfg=cfg, rng=random.Random(seed), on_event=on_event)
            base = learner.evaluate(test_tasks, use_memory=False, budget=Budget().start(clock))
            report = learner.train(train_tasks, Budget(max_rollouts=budget).start(clock))
            adapted = learner.evaluate(test_tasks, use_memory=True, budget=Budget().start(clock))
            texts = [i.text for i in store.list_insights(status="active")]
    res = _result(suite, seed, budget, base, adapted, report, texts, clock() - start, cfg,
                  str(run_dir) if run_dir is not None else None)
    return res.model_copy(update={"n_train": len(train_tasks)})
