"""Where candidate memory items come from: verified worked examples and the analyst's rules.

- A worked example is a training problem with a short solution the verifier accepted: the shortest
  correct attempt of an episode, or a verified synthesized chain. It is shown to later problems as
  an earlier exchange (`core.prompt.Hint`), so it teaches the answer format and label space.
- A rule is one of the analyst's candidate insights for a contrast pair, kept only when it neither
  leaks the source problem's answer nor copies its text.

Both kinds then face the same admission test (`agent.learn.admission`).
"""

from __future__ import annotations

from insightloop.agent.learn.admission import Candidate
from insightloop.agent.learn.analyst import Analysis
from insightloop.agent.learn.leaks import leak_reason
from insightloop.agent.learn.pairs import Pair
from insightloop.core.episode import Chain, Episode, Trajectory
from insightloop.core.prompt import Hint


def _clip(text: str, limit: int = 600) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shortest_correct(trajs: list[Trajectory]) -> Trajectory | None:
    good = [t for t in trajs if t.correct and t.text.strip()]
    return min(good, key=lambda t: (len(t.text), -t.value)) if good else None


def example_candidate(ep: Episode, max_chars: int) -> Candidate | None:
    """The episode's shortest verified attempt as a worked example, if it is short enough to show."""
    best = shortest_correct(ep.trajectories)
    if best is None or len(best.text.strip()) > max_chars:
        return None
    return Candidate(hint=Hint(kind="example", text=ep.task.prompt, solution=best.text.strip()),
                     source_task=ep.task.id, kind="example",
                     meta={"source": "attempt", "episode": ep.id, "reward": best.reward})


def chain_candidate(chain: Chain, max_chars: int) -> Candidate | None:
    """A verified synthesized chain as a worked example."""
    if not chain.verified or len(chain.text.strip()) > max_chars:
        return None
    return Candidate(hint=Hint(kind="example", text=chain.task.prompt, solution=chain.text.strip()),
                     source_task=chain.task.id, kind="example",
                     meta={"source": "chain", "episode": chain.source_episode})


def rule_candidates(ep: Episode, found: list[tuple[Pair, Analysis]], limit: int,
                    ) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """Distinct, non-leaking rules, hard pairs first, at most `limit`; and the (text, reason) rejected."""
    out: list[Candidate] = []
    rejected: list[tuple[str, str]] = []
    seen: set[str] = set()
    for pair, analysis in found:
        for ins in analysis.insights:
            key = " ".join(ins.text.lower().split())
            if key in seen:
                continue  # the same lesson from another pair or draft: one test is enough
            seen.add(key)
            reason = leak_reason(ins.text, ep.task)
            if reason:
                rejected.append((ins.text, reason))
            elif len(out) < limit:
                out.append(Candidate(hint=Hint(text=ins.text), source_task=ep.task.id, kind=ins.kind,
                                     meta=provenance(pair, analysis)))
    return out, rejected


def provenance(pair: Pair, analysis: Analysis) -> dict[str, object]:
    """What the console shows for a rule: the contrast it came from and the analyst's reading of it."""
    return {"pair_kind": pair.kind, "divergence_step": pair.divergence + 1,
            "positive": _clip(pair.positive.text), "negative": _clip(pair.negative.text),
            "siblings": [b.model_dump() for b in pair.siblings[:4]], "positive_task": pair.source_task,
            "rejection": pair.rejection, "step_critique": analysis.step_critique,
            "strategic_pivot": analysis.strategic_pivot, "success_pattern": analysis.success_pattern,
            "failure_mode": analysis.failure_mode, "applies_when": analysis.strategic_pivot[:200]}
