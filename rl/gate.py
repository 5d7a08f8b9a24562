"""The regression gate: a fold is kept only if held-out accuracy is not worse beyond noise.

Both weight sets are measured the same way, through the live backend and the solver itself (the
`sample` strategy, one greedy attempt per task, the same insights and seed), so the comparison is
paired task by task. The rule: accept iff `new >= old - max(tolerance, z * SE)`, with SE the
standard error of the per-task paired difference. Greedy decoding keeps both measurements
deterministic, so a difference is the weights' doing, not the sampler's.

On accept the live backend keeps the new weights (that is the hand-off: `lm.load_weights(path)`);
on reject it is switched back to the old ones. `retest_insights` then asks, for the most used
insights, whether the new weights still need them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from insightloop.agent.search.solve import solve_many
from insightloop.core.config import Config, SearchConfig
from insightloop.core.task import Task
from pydantic import BaseModel, Field

InsightsFor = Callable[[Task], Sequence[str]]


class GateResult(BaseModel):
    """Old and new accuracy on the same tasks, the margin used, and the verdict."""

    old_accuracy: float
    new_accuracy: float
    n: int
    tolerance: float
    margin: float
    accepted: bool
    old_scores: list[float] = Field(default_factory=list)
    new_scores: list[float] = Field(default_factory=list)
    task_ids: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def gate_search(cfg: Config) -> SearchConfig:
    """One greedy whole attempt per task: the cheapest deterministic reading of the weights."""
    return cfg.search.model_copy(update=dict(strategy="sample", rollouts=1, temperature=0.0,
                                             answer_tokens=cfg.fold.gate_max_tokens, seed=cfg.seed))


def decide(old: Sequence[float], new: Sequence[float], tolerance: float, z: float) -> GateResult:
    """The verdict from paired per-task scores (same tasks, same order)."""
    if len(old) != len(new) or not old:
        raise ValueError("the gate needs the same non-empty task list scored with both weight sets")
    n = len(old)
    diffs = [b - a for a, b in zip(old, new, strict=True)]
    mean_d = sum(diffs) / n
    var = sum((d - mean_d) ** 2 for d in diffs) / (n - 1) if n > 1 else 0.0
    margin = max(tolerance, z * math.sqrt(var / n))
    old_acc, new_acc = sum(old) / n, sum(new) / n
    return GateResult(old_accuracy=old_acc, new_accuracy=new_acc, n=n, tolerance=tolerance, margin=margin,
                      accepted=new_acc >= old_acc - margin - 1e-12, old_scores=list(old),
                      new_scores=list(new))


def scores(lm: Any, tasks: Sequence[Task], search: SearchConfig,
           insights_for: InsightsFor | None = None) -> list[float]:
    """Per-task reward of one greedy solver attempt with the weights `lm` serves now."""
    episodes = solve_many(tasks, lm, search, insights_for)
    return [ep.reward.score if ep.reward is not None else 0.0 for ep in episodes]


def gate(lm: Any, old_path: str | Path, new_path: str | Path, tasks: Sequence[Task], cfg: Config,
         insights_for: InsightsFor | None = None) -> GateResult:
    """Measure the old then the new weights on `tasks`; leave `lm` serving the winner."""
    started = time.monotonic()
    search = gate_search(cfg)
    lm.load_weights(old_path)
    old = scores(lm, tasks, search, insights_for)
    lm.load_weights(new_path)
    new = scores(lm, tasks, search, insights_for)
    result = decide(old, new, cfg.fold.gate_tolerance, cfg.fold.gate_z)
    if not result.accepted:
        lm.load_weights(old_path)  # roll back: the live policy keeps serving the old weights
    return result.model_copy(update=dict(task_ids=[t.id for t in tasks],
                                         seconds=time.monotonic() - started))


class InsightRetest(BaseModel):
    """One insight re-tested after a fold: accuracy on its tasks with it in the prompt and without."""

    insight_id: str
    with_insight: float
    without_insight: float
    absorbed: bool


def retest_insight(lm: Any, insight_id: str, text: str, tasks: Sequence[Task], cfg: Config) -> InsightRetest:
    """An insight counts as absorbed when the weights do at least as well without it (and succeed)."""
    search = gate_search(cfg)
    with_it = scores(lm, tasks, search, lambda _t: [text])
    without = scores(lm, tasks, search, None)
    w, wo = sum(with_it) / len(tasks), sum(without) / len(tasks)
    return InsightRetest(insight_id=insight_id, with_insight=w, without_insight=wo,
                         absorbed=wo > 0 and wo >= w)
