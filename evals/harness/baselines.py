"""Baseline methods for the harness: none, majority, best-of-n, episodic-rag, reflect-success and grpo.

Each is a function `(ctx, run, budget) -> MethodResult` that spends at most `budget`'s rollouts on
the training problems and is then measured on the test problems with `measure.evaluate` (frozen).

- `none`: the unlearned model; no rollouts.
- `majority`: no model at all: every test problem gets the most frequent reference answer of the
  training problems. What a method that learned only the labels' prior and form from the training
  set would score; a few-shot lift is read against it.
- `best-of-n`: rejection sampling — ⌈R / n_train⌉ whole attempts per training problem within the
  budget; the best correct attempt of each solved problem is kept, and the shortest `DEMOS` of
  them go into every test prompt as worked examples.
- `episodic-rag`: the same sampling, every attempt (correct or not, labeled) kept in the memory
  store's attempt index (FAISS); each test prompt gets the `RAG_K` attempts whose problems are most
  similar, raw — CORE's episodic-memory baseline.
- `reflect-success`: the same sampling; the analyst sees each solved problem with its correct
  attempt only (no failed attempt, no contrast) and writes one general insight, kept in the memory
  store and retrieved by the store's own retrieval at test time (ExpeL-style: an ablation of the
  contrastive analyst). Reflection calls cost tokens, not rollouts (as the analyst's do in CORE).
- `grpo`: TRL GRPO alone (through `rl.grpo`) on the training problems, rollouts = group size ×
  prompts per step × steps ≤ R, then the trained weights are measured without any prompt additions.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from insightloop.agent.learn.analyst import CandidateInsight
from insightloop.agent.learn.leaks import leak_reason
from insightloop.agent.learn.reports import EvalItem, EvalReport
from insightloop.agent.search.domain import ATTEMPT_PRIMER
from insightloop.agent.search.solve import solve_many
from insightloop.core.budget import Budget
from insightloop.core.episode import Episode, Trajectory
from insightloop.core.lm import GenRequest, Message
from insightloop.core.models import resolve_policy
from insightloop.core.prompt import Hint
from insightloop.core.task import Task
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.measure import evaluate
from insightloop.evals.harness.records import MethodResult, RunSpec
from insightloop.evals.verifiers import verify
from insightloop.memory.records import Attempt
from insightloop.memory.store import MemoryStore
from insightloop.rl.data import GRPOPrompt, chat_render
from insightloop.rl.grpo import make_grpo_trainer
from insightloop.rl.policy import load_policy, resolved, trained_model
from pydantic import ValidationError

DEMOS = 3
RAG_K = 4
CLIP = 600
REFLECT_SYSTEM = (
    "You study a problem and a correct solution to it, and write one short general lesson "
    "that helps on similar problems. Never state this problem's final answer."
)
REFLECT_PREFIX = "INSIGHT: When"
REFLECTIONS = 3  # drafts per solved problem, as the contrastive analyst may propose several


def _clip(text: str, limit: int = CLIP) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def run_none(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """The unlearned model on the test problems."""
    return MethodResult(report=evaluate(ctx, run))


def majority_answer(tasks: Sequence[Task]) -> str | None:
    """The most frequent reference answer of `tasks` (the first seen among equals), None if unlabeled."""
    labels = Counter(a for t in tasks if (a := (t.answer or "").strip()))
    return labels.most_common(1)[0][0] if labels else None


def run_majority(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """The training problems' most frequent answer given to every test problem, scored by its verifier."""
    start = ctx.clock()
    answer = majority_answer(run.train)
    rewards = [verify(task, f"Answer: {answer}" if answer is not None else "") for task in run.test]
    items = [EvalItem(task_id=task.id, score=r.score, correct=r.correct, rollouts=0, prompt_tokens=0,
                      answer=answer)
             for task, r in zip(run.test, rewards, strict=True)]
    report = EvalReport(use_memory=False, items=items, seconds=ctx.clock() - start)
    return MethodResult(report=report, detail={"answer": answer})


def sample_train(ctx: Context, run: RunSpec, budget: Budget) -> list[Episode]:
    """⌈R / n_train⌉ whole attempts per training problem, all charged to `budget`.

    The sampling is deterministic given (suite, seed, budget) — per-task seeds, a seeded backend —
    so methods that start with it share one computation; each still pays for it in full.
    """
    cap = budget.remaining_rollouts() or 0
    key = ("samples", run.suite, run.seed, cap)
    if key not in ctx.cache:
        k = max(1, math.ceil(cap / max(1, len(run.train))))
        scfg = run.cfg.search.model_copy(update={"strategy": "sample", "rollouts": k})
        own = Budget(max_rollouts=cap).start(ctx.clock)
        eps = solve_many(run.train, ctx.policy, scfg, budget=own, clock=ctx.clock)
        ctx.cache[key] = (eps, own)
    eps, spent = ctx.cache[key]
    budget.absorb(spent)
    return eps


def best_correct(ep: Episode) -> Trajectory | None:
    """The best verified attempt of an episode: highest reward, then the shortest."""
    good = [t for t in ep.trajectories if t.correct and t.text.strip()]
    return min(good, key=lambda t: (-t.reward, len(t.text))) if good else None


def demonstration(task: Task, text: str) -> Hint:
    """A verified attempt shown as a worked example: the problem, then the solution as the reply."""
    return Hint(kind="example", text=task.prompt, solution=text.strip())


def run_best_of_n(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """Rejection sampling on the training problems; the shortest correct attempts become worked
    examples, shown the same way as the memory's (`core.prompt.Hint`)."""
    eps = sample_train(ctx, run, budget)
    best = [(ep.task, t) for ep in eps if (t := best_correct(ep)) is not None]
    best.sort(key=lambda pair: len(pair[1].text))
    demos = [demonstration(task, t.text) for task, t in best[:DEMOS]]
    report = evaluate(ctx, run, (lambda _task: demos) if demos else None)
    return MethodResult(report=report, detail={"solved_train": len(best), "demonstrations": len(demos)})


def past_attempt(task_text: str, text: str, reward: float) -> str:
    verdict = "verified correct" if reward >= 1.0 else "verified incorrect"
    return (
        f"Past attempt at a similar problem ({verdict}).\nProblem: {_clip(task_text)}\nAttempt: {_clip(text)}"
    )


def run_episodic_rag(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """Raw past attempts, successful and failed, retrieved by problem similarity into the prompt."""
    eps = sample_train(ctx, run, budget)
    with MemoryStore.open(ctx.scratch(run, "episodic-rag"), ctx.embedder, run.cfg.memory) as store:
        for ep in eps:
            for t in ep.trajectories:
                if t.text.strip():
                    store.add_attempt(
                        Attempt(
                            task_id=ep.task.id,
                            task_text=ep.task.prompt,
                            family=ep.task.family,
                            text=t.text,
                            reward=t.reward,
                        )
                    )
        stored = len(store.list_attempts())

        def retrieved(task: Task) -> list[str]:
            return [
                past_attempt(a.task_text, a.text, a.reward)
                for a, _ in store.similar_attempts(task.prompt, RAG_K)
            ]

        report = evaluate(ctx, run, retrieved if stored else None)
    return MethodResult(report=report, detail={"attempts_stored": stored})


def reflect_request(task: Task, text: str, cfg_tokens: int, temperature: float, seed: int) -> GenRequest:
    user = (
        f"Problem:\n{_clip(task.prompt)}\n\nA correct solution:\n{_clip(text)}\n\n"
        "Write one line of the form: INSIGHT: When <kind of problem>, <what to do>."
    )
    return GenRequest(
        messages=(Message(role="system", content=REFLECT_SYSTEM), Message(role="user", content=user)),
        assistant_prefix=REFLECT_PREFIX,
        max_tokens=cfg_tokens,
        temperature=temperature,
        stop=("\n",),
        seed=seed,
    )


def parse_reflection(task: Task, reply: str) -> tuple[str | None, str]:
    """(the insight text of one reply, or None; why it was dropped): too short, or leaking the answer."""
    text = "When" + reply.split("\n", 1)[0]
    try:
        text = CandidateInsight(text=text).text
    except ValidationError:
        return None, "not a general rule of at least 4 words"
    leak = leak_reason(text, task)
    return (None, leak) if leak else (text, "")


def reflect(
    ctx: Context, run: RunSpec, solved: Sequence[tuple[Task, str]], budget: Budget
) -> tuple[list[tuple[Task, str]], list[dict[str, str]]]:
    """`REFLECTIONS` drafts per solved problem (its success only), batched; tokens charged, not rollouts.

    Returns the kept insights and every draft with the reason it was dropped (empty when kept).
    """
    loop = run.cfg.loop
    reqs = [
        reflect_request(task, text, loop.analyst_tokens, loop.analyst_temperature, run.seed + i)
        for i, (task, text) in enumerate(solved)
    ]
    if not reqs:
        return [], []
    replies = ctx.policy.generate([r.model_copy(update={"n": REFLECTIONS}) for r in reqs])
    kept, drafts = [], []
    for (task, _), gens in zip(solved, replies, strict=True):
        budget.charge(gens)
        for g in gens:
            text, why = parse_reflection(task, g.text)
            drafts.append({"task": task.id, "draft": g.text[:300], "dropped": why})
            if text is not None:
                kept.append((task, text))
    return kept, drafts


def run_reflect_success(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """Insights written from successes alone, retrieved by the memory store at test time."""
    eps = sample_train(ctx, run, budget)
    solved = [(ep.task, t.text) for ep in eps if (t := best_correct(ep)) is not None]
    insights, drafts = reflect(ctx, run, solved, budget)
    mem = run.cfg.memory
    with MemoryStore.open(ctx.scratch(run, "reflect-success"), ctx.embedder, mem) as store:
        for task, text in insights:
            store.add_insight(
                text,
                "strategy",
                "",
                task.family,
                None,
                task.id,
                ctx.policy.name,
                {"method": "reflect-success"},
                status="active",
            )
        kept = [i.text for i in store.list_insights(status="active")]

        def retrieved(task: Task) -> list[str]:
            return [i.text for i in store.retrieve(task, mem.top_k, False, mem.prompt_token_budget)]

        report = evaluate(ctx, run, retrieved if kept else None)
    return MethodResult(
        report=report, detail={"solved_train": len(solved), "insights": kept, "drafts": drafts}
    )


# -- grpo ------------------------------------------------------------------------------------------
def grpo_plan(run: RunSpec, budget: Budget) -> tuple[int, int]:
    """(prompts per step, steps) so that group size × prompts × steps fits the budget."""
    fc = run.cfg.fold
    per_step = max(1, min(fc.batch_size, len(run.train)))
    return per_step, (budget.remaining_rollouts() or 0) // (fc.grpo.group_size * per_step)


def train_grpo(run: RunSpec, budget: Budget, out: Path) -> dict[str, float]:
    """GRPO from the base weights on the training problems; the trained model is saved to `out/model`.
    LoRA and the learning rate are decided as for a fold (`rl.policy.resolved`: LoRA on a CPU)."""
    per_step, steps = grpo_plan(run, budget)
    # Plain GRPO: the off-policy rescue of all-wrong groups is insightloop's own addition.
    plain = run.cfg.fold.grpo.model_copy(update={"mix_offpolicy": False})
    fc = resolved(run.cfg.fold.model_copy(update={"batch_size": per_step, "grpo": plain}))
    model, tok = load_policy(resolve_policy(run.cfg.policy.model))
    render = chat_render(tok)
    prompts = [GRPOPrompt(prompt=render(t, []) + ATTEMPT_PRIMER, task=t, fail_rate=1.0) for t in run.train]
    trainer, rollout = make_grpo_trainer(model, tok, prompts, fc, steps, out / "work", verify, run.seed)
    trainer.train()
    budget.charge([], rollouts=rollout.groups * fc.grpo.group_size)
    trained_model(trainer).save_pretrained(out / "model", safe_serialization=True)
    tok.save_pretrained(out / "model")
    rewards = [float(e["reward"]) for e in trainer.state.log_history if "reward" in e]
    return {
        "steps": float(steps),
        "groups": float(rollout.groups),
        "mean_reward": sum(rewards) / len(rewards) if rewards else 0.0,
    }


def restore_base(ctx: Context, run: RunSpec) -> None:
    """Put the shared policy back on the base weights after a method that changed them."""
    ctx.policy.load_weights(resolve_policy(run.cfg.policy.model))  # type: ignore[attr-defined]


def run_grpo(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """TRL GRPO alone within the rollout budget, then the trained weights on the test problems."""
    _, steps = grpo_plan(run, budget)
    if steps == 0:
        return MethodResult(report=evaluate(ctx, run), detail={"steps": 0, "note": "budget below one group"})
    out = ctx.scratch(run, "grpo")
    detail = train_grpo(run, budget, out)
    try:
        ctx.policy.load_weights(out / "model")  # type: ignore[attr-defined]
        report = evaluate(ctx, run)
    finally:
        restore_base(ctx, run)
    return MethodResult(report=report, detail=detail)
