"""CORE retrieval scoring: rank insights for a task by their measured utility on similar problems.

For a task, the store finds its nearest stored training problems (tasks with credit records) and
hands each candidate insight here with its credit on those neighbours. Then, per insight:

- `n_eff = Σ_j w_j · uses_ij` and `u_local = Σ_j w_j · utility_sum_ij / n_eff`, where `w_j` is the
  neighbour's cosine similarity to the task (negative similarities count as 0): utility on the
  neighbours, weighted by similarity and by use count;
- `trust = n_eff / (n_eff + prior_uses)` blends that evidence with the similarity of the insight's
  own text to the task, the only signal an uncredited insight has:
  `score = trust · u_local + (1 − trust) · sim_weight · similarity`;
- while training, a UCB bonus `ucb_c · sqrt(ln(2 + Σ n_eff) / (1 + n_eff))` favours insights rarely
  tried on problems like this one. Evaluation (train=False) leaves it out.

`select` then keeps the best within `k` and a prompt-token budget.
"""

from __future__ import annotations

import math

from insightloop.memory.records import Insight
from pydantic import BaseModel, Field


class NeighbourCredit(BaseModel):
    """An insight's credit on one neighbouring task, with that task's similarity to the query."""

    task_id: str
    similarity: float
    uses: int
    utility_sum: float


class Candidate(BaseModel):
    insight: Insight
    similarity: float
    credit: list[NeighbourCredit] = Field(default_factory=list)


class ScoredInsight(BaseModel):
    """An insight with the parts of its retrieval score, so a console can show why it was chosen."""

    insight: Insight
    score: float
    utility: float
    n_eff: float
    similarity: float
    bonus: float = 0.0


def _evidence(credit: list[NeighbourCredit]) -> tuple[float, float]:
    n_eff = 0.0
    weighted = 0.0
    for c in credit:
        w = max(c.similarity, 0.0)
        n_eff += w * c.uses
        weighted += w * c.utility_sum
    return n_eff, (weighted / n_eff if n_eff > 0 else 0.0)


def score_candidates(
    candidates: list[Candidate], *, train: bool, ucb_c: float, sim_weight: float, prior_uses: float
) -> list[ScoredInsight]:
    """Score every candidate (see the module docstring); best first, ties broken by id."""
    evidence = [_evidence(c.credit) for c in candidates]
    total = sum(n for n, _ in evidence)
    out = []
    for cand, (n_eff, u_local) in zip(candidates, evidence, strict=True):
        trust = n_eff / (n_eff + prior_uses) if n_eff + prior_uses > 0 else 1.0
        score = trust * u_local + (1.0 - trust) * sim_weight * cand.similarity
        bonus = ucb_c * math.sqrt(math.log(2.0 + total) / (1.0 + n_eff)) if train else 0.0
        out.append(
            ScoredInsight(
                insight=cand.insight,
                score=score + bonus,
                utility=u_local,
                n_eff=n_eff,
                similarity=cand.similarity,
                bonus=bonus,
            )
        )
    out.sort(key=lambda s: (-s.score, s.insight.id))
    return out


def select(
    scored: list[ScoredInsight], k: int, token_budget: int | None, min_score: float | None
) -> list[ScoredInsight]:
    """The first `k` that score above `min_score` and fit the token budget together (an insight
    too long for what is left is skipped, a shorter one after it may still fit)."""
    chosen: list[ScoredInsight] = []
    used = 0
    for s in scored:
        if len(chosen) >= k:
            break
        if min_score is not None and s.score <= min_score:
            continue
        cost = s.insight.prompt_tokens
        if token_budget is not None and used + cost > token_budget:
            continue
        chosen.append(s)
        used += cost
    return chosen
