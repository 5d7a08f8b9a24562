"""Synthesis (CRPS): a fresh reasoning chain for a training problem, written with the analyst's
guidance in the prompt, kept as verified only if the verifier accepts its answer and it reads as a
plain solution (no talk of guidance), so it can serve as a worked example and as fold data."""

from __future__ import annotations

from collections.abc import Callable

from insightloop.agent.learn.analyst import Analysis
from insightloop.agent.search.domain import ATTEMPT_PRIMER, build_messages, cut_after_answer
from insightloop.core.budget import Budget
from insightloop.core.episode import Chain
from insightloop.core.lm import LM, GenRequest
from insightloop.core.task import Reward, Task

VerifyFn = Callable[[Task, str], Reward]
META_WORDS = ("insight", "guidance", "failure mode", "success pattern", "correct attempt",
              "wrong attempt", "the analyst")


def guidance_of(analysis: Analysis) -> list[str]:
    """The lines given to the synthesizer: the insights, what worked, and what to avoid."""
    out = [i.text for i in analysis.insights]
    if analysis.success_pattern:
        out.append(f"Do: {analysis.success_pattern}")
    if analysis.failure_mode:
        out.append(f"Avoid: {analysis.failure_mode}")
    return out


def has_meta_language(text: str) -> bool:
    low = text.lower()
    return any(w in low for w in META_WORDS)


def synthesize(task: Task, analysis: Analysis, lm: LM, verify: VerifyFn, budget: Budget,
               max_tokens: int = 256, temperature: float = 0.7, seed: int = 0,
               episode_id: str | None = None) -> Chain | None:
    """Write a fresh chain for the source task following the analysis; one counted rollout.

    The chain counts as verified only if the verifier accepts its answer and it does not talk about
    the guidance: it must read as a plain solution, to be trained on without the guidance.
    """
    if not budget.allows(1):
        return None
    req = GenRequest(messages=build_messages(task, guidance_of(analysis)), assistant_prefix=ATTEMPT_PRIMER,
                     n=1, max_tokens=max_tokens, temperature=temperature, seed=seed)
    gen = lm.generate([req])[0][0]
    budget.charge([gen], rollouts=1)
    text = cut_after_answer(ATTEMPT_PRIMER + gen.text)
    ok = gen.finish_reason != "error" and verify(task, text).correct and not has_meta_language(text)
    return Chain(task=task, text=text, verified=ok, source_episode=episode_id)
