"""The harness's methods by name: `ALL_METHODS` is the one list of them.

A method is a function `(ctx, run, budget) -> MethodResult` that spends at most `budget`'s rollouts
learning from `run.train` and is then measured on `run.test`. `baselines`, `ours` and `gepa_peer`
hold them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from insightloop.core.budget import Budget
from insightloop.evals.harness import baselines, gepa_peer, ours
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.records import MethodResult, RunSpec

Method = Callable[[Context, RunSpec, Budget], MethodResult]

# name -> (module in evals.harness, function in it)
_WHERE: dict[str, tuple[str, str]] = {
    "none": ("baselines", "run_none"),
    "majority": ("baselines", "run_majority"),
    "best-of-n": ("baselines", "run_best_of_n"),
    "episodic-rag": ("baselines", "run_episodic_rag"),
    "reflect-success": ("baselines", "run_reflect_success"),
    "core": ("ours", "run_core"),
    "core+fold": ("ours", "run_core_fold"),
    "grpo": ("baselines", "run_grpo"),
    "gepa": ("gepa_peer", "run_gepa"),
}
ALL_METHODS: tuple[str, ...] = tuple(_WHERE)


def methods_table() -> dict[str, Method]:
    """The method functions by name, in `ALL_METHODS` order."""
    modules = {"baselines": baselines, "ours": ours, "gepa_peer": gepa_peer}
    return {name: getattr(modules[module], function) for name, (module, function) in _WHERE.items()}


def check_methods(names: Sequence[str], table: dict[str, Method]) -> None:
    """Raise ValueError naming any of `names` missing from `table`, and the names it does hold."""
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; use any of: {', '.join(table)}")
