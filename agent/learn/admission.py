"""The paired admission test: does a candidate memory item help on the training problems?

One greedy try on its source problem (CORE's test) passes a useless sentence half of the time on a
yes/no task: it has no power. Here every candidate is measured on several training problems at
once, by teacher forcing, which is continuous and costs no sampling:

- each training problem has a *reference*: its shortest verified solution found so far (an attempt
  of the policy's that the verifier accepted), or, while it has none, its answer line;
- the per-problem gain is log P(reference | prompt with the candidate alone in it) minus
  log P(reference | prompt without it), in nats per reference token;
- a worked example is never scored on its own problem (showing a problem's solution trivially
  raises that solution's likelihood);
- a candidate is admitted when its mean gain is at least `loop.admission_min_gain` and the
  one-sided bootstrap bound of the mean at `loop.admission_level` is above zero.

Every scoring pass is charged to the budget as tokens. The no-candidate scores are computed once
per reference and reused.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from insightloop.agent.search.domain import build_messages
from insightloop.core.budget import Budget
from insightloop.core.config import LoopConfig
from insightloop.core.lm import Scorer, ScoreRequest, Scores
from insightloop.core.prompt import Hint
from insightloop.core.task import Task
from pydantic import BaseModel, Field

RESAMPLES = 2000


class Verdict(BaseModel):
    """The outcome of one candidate's test: per-problem gains, their mean and lower bound."""

    admitted: bool
    gain: float = 0.0
    lower: float = 0.0
    gains: dict[str, float] = Field(default_factory=dict)
    reason: str = ""
    episode: str | None = Field(None, description="the admission try's episode (the source-try test)")


class Candidate(BaseModel):
    """A memory item on trial: the hint, the problem it came from, and what to store with it."""

    hint: Hint
    source_task: str | None = None
    kind: str = "strategy"
    meta: dict[str, object] = Field(default_factory=dict)


def bootstrap_lower(values: Sequence[float], level: float, rng: random.Random) -> float:
    """One-sided percentile-bootstrap lower bound of the mean at `level` (e.g. 0.9)."""
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(RESAMPLES))
    return means[int((1 - level) * (RESAMPLES - 1))]


def answer_line(task: Task) -> str:
    return f"Answer: {task.answer}"


class AdmissionTest:
    """Paired teacher-forced tests of candidates against references (see the module docstring)."""

    def __init__(self, lm: Scorer, cfg: LoopConfig, rng: random.Random) -> None:
        self.lm = lm
        self.cfg = cfg
        self.rng = rng
        self._base: dict[tuple[str, str], float] = {}  # (task id, reference) -> per-token log-prob

    def judge(self, candidates: Sequence[Candidate], problems: Sequence[tuple[Task, str]],
              budget: Budget) -> list[Verdict]:
        """Score every candidate on up to `admission_problems` of `problems` (task, reference), batched."""
        problems = list(problems)[: self.cfg.admission_problems]
        plan = [[p for p in problems if not (c.hint.kind == "example" and p[0].id == c.source_task)]
                for c in candidates]
        self._baselines(problems, budget)
        reqs = [self._request(task, ref, [c.hint]) for c, own in zip(candidates, plan, strict=True)
                for task, ref in own]
        scores = self._score(reqs, budget)
        verdicts, at = [], 0
        for own in plan:
            gains = {t.id: scores[at + i] - self._base[(t.id, ref)] for i, (t, ref) in enumerate(own)}
            at += len(own)
            verdicts.append(self.decide(gains))
        return verdicts

    def decide(self, gains: dict[str, float]) -> Verdict:
        if not gains:
            return Verdict(admitted=False, reason="no other training problem to test it on")
        values = list(gains.values())
        mean = sum(values) / len(values)
        lower = bootstrap_lower(values, self.cfg.admission_level, self.rng)
        ok = mean >= self.cfg.admission_min_gain and lower > 0
        reason = (f"{'raised' if mean > 0 else 'lowered'} the likelihood of verified solutions on "
                  f"{len(values)} training problems by {mean:+.3f} nats/token (lower bound {lower:+.3f})")
        return Verdict(admitted=ok, gain=mean, lower=lower, gains=gains, reason=reason)

    def _baselines(self, problems: Sequence[tuple[Task, str]], budget: Budget) -> None:
        todo = [(t, ref) for t, ref in problems if (t.id, ref) not in self._base]
        if not todo:
            return
        for (t, ref), lp in zip(todo, self._score([self._request(t, ref, []) for t, ref in todo], budget),
                                strict=True):
            self._base[(t.id, ref)] = lp

    @staticmethod
    def _request(task: Task, reference: str, hints: list[Hint]) -> ScoreRequest:
        return ScoreRequest(messages=build_messages(task, hints), continuations=(reference,))

    def _score(self, reqs: list[ScoreRequest], budget: Budget) -> list[float]:
        """Mean log-probability per token of each request's one continuation."""
        if not reqs:
            return []
        out: list[Scores] = self.lm.score(reqs)
        budget.charge_scores(out, prompts=True)
        return [s.logprobs[0] / max(1, s.tokens[0]) for s in out]

    def reset(self) -> None:
        """Forget the no-candidate scores (the policy's weights changed)."""
        self._base.clear()
