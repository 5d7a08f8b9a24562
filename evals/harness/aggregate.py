"""Summaries of a harness run: per (suite, method) means over seeds, and the machine it ran on."""

from __future__ import annotations

import math
import os
import platform
import random
import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

from insightloop.core.stats import mcnemar_p, mean_ci, paired_ci
from insightloop.evals.harness.records import Aggregate, Lift, RunRecord


def machine_info() -> dict[str, Any]:
    """Python, platform, CPU count and the torch / transformers versions, for results.json."""
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def top_answer(answers: Sequence[str | None]) -> dict[str, Any]:
    """The most frequent answer (None counts as "no answer") and its share of `answers`."""
    if not answers:
        return {}
    counts = Counter(a if a is not None else "" for a in answers)
    answer, n = counts.most_common(1)[0]
    return {"top_answer": answer, "top_share": n / len(answers)}


def aggregate(records: Sequence[RunRecord]) -> list[Aggregate]:
    """One row per (suite, method), in the order they first appear; failed runs are counted apart."""
    keys = list(dict.fromkeys((r.suite, r.method) for r in records))
    out = []
    for suite, method in keys:
        rs = [r for r in records if r.suite == suite and r.method == method]
        ok = [r for r in rs if r.error is None]
        acc, ci = mean_ci([r.accuracy for r in ok])
        out.append(
            Aggregate(
                suite=suite,
                method=method,
                seeds=len(ok),
                accuracy=acc,
                ci95=ci,
                rollouts=_mean([r.rollouts for r in ok]),
                prompt_tokens_per_problem=_mean([r.prompt_tokens_per_problem for r in ok]),
                seconds=_mean([r.seconds for r in ok]),
                failed=len(rs) - len(ok),
                **top_answer([a for r in ok for a in r.answers]),
            )
        )
    return out


def _paired(records: Sequence[RunRecord], suite: str, method: str, base: str) -> tuple[list[float], list[float]]:
    """Per-problem scores of `method` and `base` on the same test problems of every shared seed."""
    ok = {(r.method, r.seed): r for r in records if r.suite == suite and r.error is None}
    ours, theirs = [], []
    for (m, seed), rec in ok.items():
        other = ok.get((base, seed))
        if m != method or other is None or other.test_ids != rec.test_ids:
            continue
        ours += rec.scores
        theirs += other.scores
    return ours, theirs


# A method that adds to another is also measured against it: the fold's own contribution is
# `core+fold` over `core` (same memory, same training problems), not over the unlearned model.
BUILDS_ON = {"core+fold": "core"}


def lifts(records: Sequence[RunRecord], base: str = "none") -> list[Lift]:
    """Every method against `base`, per suite, paired per test problem over the seeds they share;
    then every method of `BUILDS_ON` against the method it adds to."""
    pairs = [(suite, method, base) for suite, method in dict.fromkeys((r.suite, r.method) for r in records)
             if method != base]
    pairs += [(suite, method, BUILDS_ON[method]) for suite, method, _ in list(pairs)
              if method in BUILDS_ON and BUILDS_ON[method] != base]
    out = []
    for suite, method, against in pairs:
        ours, theirs = _paired(records, suite, method, against)
        if not ours:
            continue
        lo, hi = paired_ci(theirs, ours, random.Random(0))
        out.append(Lift(suite=suite, method=method, baseline=against, n=len(ours),
                        lift=statistics.fmean(ours) - statistics.fmean(theirs), lo=lo, hi=hi,
                        mcnemar_p=mcnemar_p(theirs, ours)))
    return out
