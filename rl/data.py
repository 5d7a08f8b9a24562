"""Training data for folding, built from what the learning loop verified.

Four sources, each checked by a verifier before it gets here: the episodes' correct attempts, the
synthesized chains that passed their verifier (`memory.chains`), and the memory's admitted worked
examples (a problem and its verified solution, `WorkedExample`; they also passed the admission
test). Everything is plain text in the solver's own prompt format (the chat template applied to
`agent.search.domain.build_messages`, the assistant turn primed the way the solver primes it), so
the weights learn exactly the distribution the solver samples from:

- GRPO prompts: recent training problems, sampled with weight toward those still failed; each keeps
  its task (the verifier is the reward) and, when one exists, a verified off-policy completion —
  the shortest correct attempt, chain or worked-example solution of that problem — that joins a
  group whose samples are all wrong (mixed-policy GRPO).
- SFT examples: one correct text per problem, the *longest*. This is the thoughts-length balance of
  the tree-CoT recipe: supervised data keeps the fullest verified reasoning, so a small model does
  not learn to jump to the answer line, while the preference data below favours the shortest, so
  DPO does not learn that longer is better. Taking one text per problem keeps problems with many
  correct attempts from dominating.
- DPO pairs: in one search tree, the *shortest* correct trajectory against the incorrect one that
  shares the shortest common prefix with it; the shared steps go into the prompt, so only the
  divergent parts are scored.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

from insightloop.agent.search.domain import ATTEMPT_PRIMER, build_messages
from insightloop.core.episode import Chain, Episode, Trajectory
from insightloop.core.task import Task
from pydantic import BaseModel, Field

Render = Callable[[Task, Sequence[str]], str]
"""Renders a task (and insights) into the prompt text the policy sees before its assistant turn."""


class GRPOPrompt(BaseModel):
    """One GRPO prompt: the rendered text, its task, how often it is still failed, an off-policy text."""

    prompt: str
    task: Task
    fail_rate: float = Field(ge=0.0, le=1.0)
    offpolicy: str | None = None


class WorkedExample(BaseModel):
    """An admitted worked example of the memory: its problem as a task, and the verified solution."""

    task: Task
    solution: str
    insight_id: str


class SFTExample(BaseModel):
    """A prompt and one correct completion for it."""

    prompt: str
    completion: str
    task_id: str
    source: str


class DPOPair(BaseModel):
    """A prompt (with any shared reasoning prefix) and the correct vs incorrect continuations."""

    prompt: str
    chosen: str
    rejected: str
    task_id: str
    shared_steps: int = 0


def chat_render(tokenizer: object) -> Render:
    """The solver's prompt through `tokenizer`'s chat template, up to the start of the assistant turn."""

    def render(task: Task, insights: Sequence[str] = ()) -> str:
        msgs = [m.model_dump() for m in build_messages(task, list(insights))]
        return tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)  # type: ignore[attr-defined]

    return render


def split_primer(text: str) -> str:
    """A full attempt text minus the primer the GRPO prompt already ends with."""
    return text[len(ATTEMPT_PRIMER):] if text.startswith(ATTEMPT_PRIMER) else " " + text.lstrip()


def _by_task(episodes: Iterable[Episode]) -> dict[str, list[Episode]]:
    groups: dict[str, list[Episode]] = {}
    for ep in sorted(episodes, key=lambda e: e.started):
        groups.setdefault(ep.task.id, []).append(ep)
    return groups


def correct_texts(episodes: Sequence[Episode], chains: Sequence[Chain],
                  examples: Sequence[WorkedExample] = ()) -> dict[str, list[tuple[str, str]]]:
    """Per task id: (text, source) of every verified chain, worked example and correct trajectory."""
    out: dict[str, list[tuple[str, str]]] = {}
    for c in chains:
        if c.verified and c.text.strip():
            out.setdefault(c.task.id, []).append((c.text, "chain"))
    for x in examples:
        if x.solution.strip():
            out.setdefault(x.task.id, []).append((x.solution, "example"))
    for ep in episodes:
        for t in ep.trajectories:
            if t.correct and t.text.strip():
                out.setdefault(ep.task.id, []).append((t.text, "trajectory"))
    return out


def _weighted_sample(items: list[str], weights: list[float], k: int, rng: random.Random) -> list[str]:
    """k distinct items, drawn without replacement with probability proportional to weight."""
    pool = list(zip(items, weights, strict=True))
    chosen: list[str] = []
    while pool and len(chosen) < k:
        r = rng.random() * sum(w for _, w in pool)
        for i, (item, w) in enumerate(pool):
            r -= w
            if r <= 0 or i == len(pool) - 1:
                chosen.append(item)
                pool.pop(i)
                break
    return chosen


def build_grpo_prompts(episodes: Sequence[Episode], chains: Sequence[Chain], render: Render, n: int,
                       rng: random.Random, insights: dict[str, list[str]] | None = None,
                       recent: int = 64, examples: Sequence[WorkedExample] = ()) -> list[GRPOPrompt]:
    """Up to `n` prompts from the `recent` most recently seen tasks, weighted toward failed ones; each
    with its shortest verified text (chain, worked example or attempt) as the off-policy completion."""
    groups = _by_task(episodes)
    order = sorted(groups, key=lambda tid: groups[tid][-1].started, reverse=True)[:recent]
    fail = {tid: 1.0 - sum(e.correct for e in groups[tid]) / len(groups[tid]) for tid in order}
    # A floor weight keeps solved tasks in play, so the update does not forget them entirely.
    picked = _weighted_sample(order, [0.25 + fail[t] for t in order], n, rng)
    goods = correct_texts(episodes, chains, examples)
    out = []
    for tid in picked:
        task = groups[tid][-1].task
        texts = goods.get(tid, [])
        # The shortest correct text costs the fewest tokens in the group's forward pass.
        off = min((t for t, _ in texts), key=len, default=None)
        prompt = render(task, (insights or {}).get(tid, [])) + ATTEMPT_PRIMER
        out.append(GRPOPrompt(prompt=prompt, task=task, fail_rate=fail[tid],
                              offpolicy=None if off is None else split_primer(off)))
    return out


def build_sft_examples(episodes: Sequence[Episode], chains: Sequence[Chain], render: Render,
                       insights: dict[str, list[str]] | None = None,
                       examples: Sequence[WorkedExample] = ()) -> list[SFTExample]:
    """One example per problem with a verified text: the longest one (thoughts-length balance)."""
    tasks = ({x.task.id: x.task for x in examples} | {c.task.id: c.task for c in chains}
             | {ep.task.id: ep.task for ep in episodes})
    out = []
    for tid, texts in sorted(correct_texts(episodes, chains, examples).items()):
        text, source = max(texts, key=lambda ts: len(ts[0]))
        prompt = render(tasks[tid], (insights or {}).get(tid, []))
        out.append(SFTExample(prompt=prompt, completion=text, task_id=tid, source=source))
    return out


def _steps(t: Trajectory, ep: Episode) -> list[str]:
    if t.steps:
        return t.steps
    return [ep.tree.nodes[i].step_text for i in t.node_ids if 0 < i < len(ep.tree.nodes)]


def _common(a: Trajectory, b: Trajectory) -> int:
    n = 0
    for x, y in zip(a.node_ids, b.node_ids, strict=False):
        if x != y:
            break
        n += 1
    return n


def dpo_pair(ep: Episode, render: Render, insights: Sequence[str] = ()) -> DPOPair | None:
    """The episode's DPO pair, or None when the tree holds no correct or no incorrect attempt."""
    good = [t for t in ep.trajectories if t.correct and t.text.strip()]
    bad = [t for t in ep.trajectories if not t.correct and t.text.strip()]
    if not good or not bad:
        return None
    chosen = min(good, key=lambda t: (len(t.text), t.n_steps))
    rejected = min(bad, key=lambda t: (_common(chosen, t), len(t.text)))
    k = _common(chosen, rejected)
    prefix = "".join(_steps(chosen, ep)[:k])
    if not (chosen.text.startswith(prefix) and rejected.text.startswith(prefix)):
        prefix, k = "", 0
    c, r = chosen.text[len(prefix):], rejected.text[len(prefix):]
    if not c.strip() or not r.strip() or c == r:
        return None
    return DPOPair(prompt=render(ep.task, insights) + prefix, chosen=c, rejected=r,
                   task_id=ep.task.id, shared_steps=k)


def build_dpo_pairs(episodes: Sequence[Episode], render: Render,
                    insights: dict[str, list[str]] | None = None) -> list[DPOPair]:
    """One pair per episode whose tree has both a correct and an incorrect attempt."""
    pairs = [dpo_pair(ep, render, (insights or {}).get(ep.task.id, [])) for ep in episodes]
    return [p for p in pairs if p is not None]
