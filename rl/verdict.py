"""The gate's decision rule: paired per-problem scores of the old and the new weights → keep or roll back.

Both weight sets answer the same held-out problems, so the comparison is paired: what matters is
the per-problem change d = new − old, and its mean Δ. Three rules read it (`fold.gate_rule`), each
in one of two modes (`fold.gate_require`):

| rule       | "worse beyond noise" (no_worse rejects it)           | "better beyond noise" (better needs it) |
|------------|------------------------------------------------------|-----------------------------------------|
| `interval` | the paired bootstrap interval of Δ at `gate_level`   | the interval lies above 0               |
|            | lies below 0 (`core.stats.paired_ci`)                |                                         |
| `mcnemar`  | Δ < 0 and McNemar's exact p < 1 − `gate_level`       | Δ > 0 and p < 1 − `gate_level`          |
|            | (`core.stats.mcnemar_p`)                             |                                         |
| `margin`   | Δ < −max(`gate_tolerance`, `gate_z` · SE(d))         | Δ > `gate_z` · SE(d)                    |

Under `no_worse` a drop of at most `gate_tolerance` is always kept: a fold is rolled back only when
it is worse beyond noise *and* by more than the tolerance. The default (`interval`, `no_worse`, 95 %)
keeps a fold unless the held-out problems show it confidently hurt; `better` is the stricter choice
for a run that should only ever move to weights shown to help. With few held-out problems the
interval is wide and decides little, which is why the gate measures on up to `gate_slice` (64)
problems. The bootstrap is seeded, so a verdict is reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Literal

from insightloop.core.stats import mcnemar_p, paired_ci
from pydantic import BaseModel, Field

Rule = Literal["interval", "mcnemar", "margin"]
Require = Literal["no_worse", "better"]


class GateResult(BaseModel):
    """Old and new accuracy on the same tasks, the rule's numbers, and the verdict."""

    old_accuracy: float
    new_accuracy: float
    n: int
    tolerance: float
    margin: float = Field(description="max(tolerance, z · SE of the paired difference)")
    accepted: bool
    rule: str = "margin"
    require: str = "no_worse"
    level: float | None = Field(None, description="confidence of the interval / McNemar rules")
    ci_low: float | None = Field(None, description="paired bootstrap interval of mean(new − old)")
    ci_high: float | None = None
    p_value: float | None = Field(None, description="McNemar's exact two-sided p-value")
    reason: str = ""
    old_scores: list[float] = Field(default_factory=list)
    new_scores: list[float] = Field(default_factory=list)
    task_ids: list[str] = Field(default_factory=list)
    seconds: float = 0.0


def _standard_error(diffs: Sequence[float]) -> float:
    n = len(diffs)
    if n < 2:
        return 0.0
    mean = sum(diffs) / n
    return math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1) / n)


def _interval(old: Sequence[float], new: Sequence[float], level: float, seed: int,
              ) -> tuple[bool, bool, dict[str, float]]:
    lo, hi = paired_ci(old, new, random.Random(seed), level=level)
    return hi < 0, lo > 0, {"ci_low": lo, "ci_high": hi}


def _mcnemar(old: Sequence[float], new: Sequence[float], delta: float, level: float,
             ) -> tuple[bool, bool, dict[str, float]]:
    p = mcnemar_p(old, new)
    significant = p < 1 - level
    return significant and delta < 0, significant and delta > 0, {"p_value": p}


def _reason(rule: str, delta: float, worse: bool, better: bool, numbers: dict[str, float]) -> str:
    shown = ", ".join(f"{k} {v:+.3f}" if k.startswith("ci") else f"{k} {v:.3g}" for k, v in numbers.items())
    finding = "worse beyond noise" if worse else "better beyond noise" if better else "within noise"
    return f"{rule}: mean change {delta:+.3f}" + (f" ({shown})" if shown else "") + f": {finding}"


def decide(old: Sequence[float], new: Sequence[float], tolerance: float, z: float, *, rule: Rule = "margin",
           require: Require = "no_worse", level: float = 0.95, seed: int = 0) -> GateResult:
    """The verdict from paired per-task scores (same tasks, same order); see the module docstring."""
    if len(old) != len(new) or not old:
        raise ValueError("the gate needs the same non-empty task list scored with both weight sets")
    n = len(old)
    diffs = [b - a for a, b in zip(old, new, strict=True)]
    delta, se = sum(diffs) / n, _standard_error(diffs)
    margin = max(tolerance, z * se)
    numbers: dict[str, float] = {}
    if rule == "interval":
        worse, better, numbers = _interval(old, new, level, seed)
    elif rule == "mcnemar":
        worse, better, numbers = _mcnemar(old, new, delta, level)
    else:
        worse, better = delta < -margin - 1e-12, delta > z * se + 1e-12
    accepted = better if require == "better" else not (worse and delta < -tolerance - 1e-12)
    return GateResult(old_accuracy=sum(old) / n, new_accuracy=sum(new) / n, n=n, tolerance=tolerance,
                      margin=margin, accepted=accepted, rule=rule, require=require,
                      level=None if rule == "margin" else level, reason=_reason(rule, delta, worse, better,
                                                                               numbers),
                      old_scores=list(old), new_scores=list(new), **numbers)
