"""The regression gate: a fold is kept only if held-out accuracy is not worse beyond noise.

Both weight sets are measured the same way, through the live backend and the solver itself (the
`sample` strategy, one greedy attempt per task, the same insights and seed), so the comparison is
paired task by task. Greedy decoding keeps both measurements deterministic, so a difference is the
weights' doing, not the sampler's. The decision rule (`rl.verdict`, configured by `fold.gate_rule`,
`gate_require`, `gate_level`, `gate_tolerance`) reads the paired scores: by default the fold is
kept unless the paired bootstrap interval of the accuracy change lies below zero and the drop
exceeds the tolerance.

On accept the live backend keeps the new weights (that is the hand-off: `lm.load_weights(path)`);
on reject it is switched back to the old ones. `retest_insights` then asks, for the most used
insights, whether the new weights still need them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from insightloop.agent.search.solve import solve_many
from insightloop.core.config import Config, SearchConfig
from insightloop.core.task import Task
from insightloop.rl.verdict import GateResult, decide
from pydantic import BaseModel

InsightsFor = Callable[[Task], Sequence[str]]


def gate_search(cfg: Config) -> SearchConfig:
    """One greedy whole attempt per task: the cheapest deterministic reading of the weights."""
    return cfg.search.model_copy(update=dict(strategy="sample", rollouts=1, temperature=0.0,
                                             answer_tokens=cfg.fold.gate_max_tokens, seed=cfg.seed))


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
    fc = cfg.fold
    result = decide(old, new, fc.gate_tolerance, fc.gate_z, rule=fc.gate_rule, require=fc.gate_require,
                    level=fc.gate_level, seed=cfg.seed)
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
