"""The CORE learning loop: solve, credit, contrast, admit — all charged to one `Budget`.

`Learner` ties the policy, the analyst and the insight memory together:

- `estimate_baselines(tasks, budget)`: each training problem's no-insight success rate, from
  `cfg.loop.baseline_samples` counted rollouts (the credit an insight earns is reward − baseline).
- `train(tasks, budget)`: picks problems with failure-biased sampling and runs training episodes
  until the budget cannot pay for another rollout; it never spends past the budget.
- `run_episode(task, train, budget)`: one task end to end. Retrieve (with a UCB bonus when
  training) → solve → credit every retrieved item → keep correct attempts → curation
  (`agent.learn.curation`: worked examples, contrast pairs → analyst → leak filter, synthesis,
  all through the admission test) → retire harmful items. Every episode is logged in the store.
- `evaluate(tasks, use_memory, budget)`: frozen memory — no credit, no additions, no writes.

Progress goes out as typed events (`agent.events`) to `on_event`; nothing here prints.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from insightloop.agent.learn.curation import Curator, eval_search
from insightloop.agent.learn.memory import Memory
from insightloop.agent.learn.reports import EvalItem, EvalReport, TrainReport
from insightloop.agent.search.solve import default_verifier, new_episode_id, solve, solve_many
from insightloop.core import events as ev
from insightloop.core.budget import Budget
from insightloop.core.config import Config, SearchConfig
from insightloop.core.episode import Episode
from insightloop.core.lm import LM
from insightloop.core.prompt import Hint
from insightloop.core.task import Reward, Task, Verifier
from insightloop.memory.records import Attempt, Insight

VerifierFor = Callable[[Task], Verifier]
Folder = Callable[[], tuple[bool, dict[str, Any]]]
"""Folds the run's verified data into the policy's weights: (accepted, details). Raises ValueError
when there is too little data to fold yet. The runtime builds it (folding sits above learning)."""




def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def hints_of(insights: Sequence[Insight]) -> list[Hint]:
    """Memory items as the solver shows them: worked examples as exchanges, the rest as rules."""
    return [Hint(kind="example", text=i.text, solution=i.solution) if i.kind == "example" and i.solution
            else Hint(text=i.text) for i in insights]


class Learner:
    """The CORE loop over one policy, one analyst and one insight memory (see the module docstring)."""

    def __init__(self, policy: LM, analyst: LM, store: Memory, cfg: Config, rng: random.Random | None = None,
                 on_event: ev.EventSink = ev.ignore, *, run_dir: str | Path | None = None,
                 verifier_for: VerifierFor | None = None, fold: Folder | None = None,
                 clock: Callable[[], float] = time.time):
        self.policy = policy
        self.analyst_lm = analyst
        self.store = store
        self.cfg = cfg
        self.rng = rng or random.Random(cfg.seed)
        self.emit = on_event
        run_dir = run_dir if run_dir is not None else getattr(store, "run_dir", None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.verifier_for = verifier_for or default_verifier
        self.fold = fold
        self.clock = clock
        self.baselines: dict[str, float] = {}
        self.stats: dict[str, tuple[int, int]] = {}  # task id -> (training episodes, solved)
        self.report = TrainReport()
        self.curator = Curator(policy, analyst, store, cfg, self.rng, on_event, self.report,
                               verify=self._verify, run_dir=self.run_dir, clock=clock)
        self._since_fold = 0

    # -- search configurations -------------------------------------------------------------------
    def eval_search(self, temperature: float | None = None, rollouts: int | None = None) -> SearchConfig:
        """Evaluation attempts: whole samples, greedy by default (a paired measurement)."""
        return eval_search(self.cfg, temperature, rollouts)

    def _verify(self, task: Task, text: str) -> Reward:
        return self.verifier_for(task).verify(task, text)

    def _solve(self, task: Task, scfg: SearchConfig, insights: Sequence[str | Hint], budget: Budget,
               episode_id: str | None = None) -> Episode:
        rng = random.Random(self.rng.randrange(2**31))
        return solve(task, self.policy, scfg, insights, budget, rng, self.verifier_for(task),
                     episode_id=episode_id, clock=self.clock)

    def _budget_event(self, budget: Budget) -> None:
        self.emit(ev.BudgetUpdate(rollouts=budget.rollouts, max_rollouts=budget.max_rollouts,
                                  prompt_tokens=budget.prompt_tokens, usd=budget.usd, seconds=budget.seconds,
                                  completion_tokens=budget.completion_tokens))

    # -- baselines -------------------------------------------------------------------------------
    def estimate_baselines(self, tasks: Sequence[Task], budget: Budget) -> dict[str, float]:
        """No-insight success rate per task from `baseline_samples` counted rollouts, batched."""
        n = self.cfg.loop.baseline_samples
        left = budget.remaining_rollouts()
        fit = [t for t in tasks if t.answer is not None][: len(tasks) if left is None else left // max(n, 1)]
        if n == 0 or not fit or not budget.allows(n):
            return {}
        scfg = self.cfg.search.model_copy(update={"strategy": "sample", "rollouts": n})
        out: dict[str, float] = {}
        for ep in solve_many(fit, self.policy, scfg, budget=budget, clock=self.clock):
            if not ep.trajectories:
                continue
            rate = sum(t.reward for t in ep.trajectories) / len(ep.trajectories)
            self.store.set_baseline(ep.task.id, rate, len(ep.trajectories))
            self.baselines[ep.task.id] = out[ep.task.id] = rate
            ep.meta["phase"] = "baseline"
            self._keep_correct(ep)
            self._log(ep)
        self._budget_event(budget)
        return out

    def baseline_of(self, task: Task) -> float:
        """The task's no-insight success rate: estimated here, else stored, else 0."""
        if task.id in self.baselines:
            return self.baselines[task.id]
        stored = self.store.baseline(task.id)
        return 0.0 if stored is None else stored

    # -- training --------------------------------------------------------------------------------
    def _pick(self, tasks: Sequence[Task]) -> Task:
        """Failure-biased sampling: weight 1 − (smoothed success rate), plus a floor."""
        weights = []
        for t in tasks:
            n, solved = self.stats.get(t.id, (0, 0))
            prior = self.baseline_of(t)
            rate = (solved + prior + 0.5) / (n + 2.0)  # the baseline acts as one pseudo-episode
            weights.append(max(0.0, 1.0 - rate) + 0.05)
        return self.rng.choices(list(tasks), weights=weights)[0]

    def train(self, tasks: Sequence[Task], budget: Budget) -> TrainReport:
        """Baselines for tasks without one, then training episodes until the budget is spent."""
        labeled = [t for t in tasks if t.answer is not None]
        self.curator.train_tasks = labeled
        budget.start(self.clock)
        start, before = self.clock(), budget.model_copy()
        self.estimate_baselines([t for t in labeled if self._needs_baseline(t)], budget)
        while labeled and budget.allows(1):
            spent = budget.rollouts
            self.run_round(self._pick_round(labeled, budget), budget)
            if budget.rollouts == spent:
                break  # nothing could be spent (e.g. a token or time cap): do not spin
        rep = self.report
        rep.rollouts += budget.rollouts - before.rollouts
        rep.prompt_tokens += budget.prompt_tokens - before.prompt_tokens
        rep.completion_tokens += budget.completion_tokens - before.completion_tokens
        rep.seconds += self.clock() - start
        return rep.model_copy()

    def _needs_baseline(self, task: Task) -> bool:
        return task.id not in self.baselines and self.store.baseline(task.id) is None

    def _pick_round(self, tasks: Sequence[Task], budget: Budget) -> list[Task]:
        """Up to `loop.round_size` distinct tasks, drawn one by one with failure-biased weights, as
        many as the budget can pay for with what learning from each costs (synthesis, admission tries)."""
        loop = self.cfg.loop
        tries = 0 if self.curator.admission is not None else loop.max_candidates
        per_task = self.cfg.search.rollouts + tries + int(loop.synthesize)
        left = budget.remaining_rollouts()
        size = loop.round_size if left is None else max(1, min(loop.round_size, left // per_task))
        pool, out = list(tasks), []
        while pool and len(out) < size:
            out.append(self._pick(pool))
            pool.remove(out[-1])
        return out

    def _retrieve(self, task: Task, train: bool) -> list[Insight]:
        mem = self.cfg.memory
        return self.store.retrieve(task, mem.top_k, train, mem.prompt_token_budget) if mem.top_k else []

    def run_episode(self, task: Task, train: bool, budget: Budget) -> Episode:
        """One task end to end (see the module docstring); learning happens only when `train`."""
        return self.run_round([task], budget, train)[0]

    def respond(self, task: Task, budget: Budget, learn: bool = True) -> Episode:
        """Answer a task as a user receives it, then learn from it: the answer is one attempt with the
        memory as it stands and the evaluation decoding (greedy by default), so a reference answer is
        only used to grade it, never to choose it; a labeled task then gets a training episode
        (search, credit, curation) when `learn`. Returns the answer's episode (phase `answer`)."""
        used = self._retrieve(task, False)
        ep = self._solve(task, self.eval_search(), hints_of(used), budget)
        ep.meta.update(phase="answer", insight_ids=[i.id for i in used])
        self._log(ep)
        self.emit(ev.EpisodeFinished(episode_id=ep.id, task_id=task.id, train=False,
                                     correct=ep.correct if ep.reward is not None else None,
                                     reward=ep.reward.score if ep.reward else None, rollouts=ep.rollouts,
                                     prompt_tokens=ep.prompt_tokens, completion_tokens=ep.completion_tokens,
                                     seconds=ep.seconds, answer=ep.answer))
        if learn and task.answer is not None and budget.allows(1):
            self._remember(task)
            self.run_episode(task, True, budget)
        return ep

    def _remember(self, task: Task) -> None:
        """A labeled task from the stream joins the problems the admission test scores candidates on,
        newest first (the test reads the first `admission_problems`; a few more are kept so a worked
        example, never tested on its own problem, still has a full set)."""
        keep = self.cfg.loop.admission_problems + 1
        rest = [t for t in self.curator.train_tasks if t.id != task.id]
        self.curator.train_tasks = [task, *rest][:keep]

    def run_round(self, tasks: Sequence[Task], budget: Budget, train: bool = True) -> list[Episode]:
        """Several tasks' episodes searched together (one batch for all their requests) with the
        memory as it stands, then learned from one by one: the loop stays CORE's, a round at a time."""
        used = {t.id: self._retrieve(t, train) for t in tasks}
        ids: dict[str, str] = {}

        def started(task: Task) -> list[Hint]:
            ids[task.id] = new_episode_id(task)
            self.emit(ev.EpisodeStarted(episode_id=ids[task.id], task_id=task.id, family=task.family,
                                        train=train, insights=[i.id for i in used[task.id]]))
            return hints_of(used[task.id])

        seeds = {t.id: random.Random(self.rng.randrange(2**31)) for t in tasks}
        eps = solve_many(list(tasks), self.policy, self.cfg.search, started, budget=budget,
                         verifier_for=self.verifier_for, clock=self.clock, episode_ids=ids,
                         rng_for=lambda t: seeds[t.id])
        for ep in eps:
            self._finish(ep, used[ep.task.id], train, budget)
        return eps

    def _finish(self, ep: Episode, insights: list[Insight], train: bool, budget: Budget) -> None:
        ep.meta.update(phase="train" if train else "run", insight_ids=[i.id for i in insights])
        if train and ep.task.answer is not None:
            self._learn(ep, insights, budget)
        self._log(ep)
        self.emit(ev.EpisodeFinished(episode_id=ep.id, task_id=ep.task.id, train=train, correct=ep.correct,
                                     reward=ep.reward.score if ep.reward else 0.0, rollouts=ep.rollouts,
                                     prompt_tokens=ep.prompt_tokens, completion_tokens=ep.completion_tokens,
                                     seconds=ep.seconds))
        self._budget_event(budget)
        if train:
            self._maybe_fold()

    def _log(self, ep: Episode) -> None:
        """The store is the one record of episodes: the console shows them, the fold learns from them."""
        self.store.add_episode(ep)

    def _learn(self, ep: Episode, insights: list[Insight], budget: Budget) -> None:
        task, reward = ep.task, (ep.reward.score if ep.reward else 0.0)
        base = self.baseline_of(task)
        if insights:
            ids = [i.id for i in insights]
            self.store.credit(ids, task, reward, base, ep.id)
            self.emit(ev.Credited(task_id=task.id, episode_id=ep.id, insight_ids=ids, reward=reward,
                                  baseline=base))
        self._keep_correct(ep)
        n, solved = self.stats.get(task.id, (0, 0))
        self.stats[task.id] = (n + 1, solved + int(ep.correct))
        self.report.episodes += 1
        self.report.solved += int(ep.correct)
        if self.cfg.loop.curate:
            self.curator.learn_from(ep, budget)
        self.store.retire_if_harmful()

    def _keep_correct(self, ep: Episode) -> None:
        """Store each distinct correct attempt (later failures are contrasted with them); the shortest
        one per task is the reference the admission test scores."""
        seen: set[str] = set()
        for t in ep.trajectories:
            if t.correct and _norm(t.text) not in seen:
                seen.add(_norm(t.text))
                self.store.add_attempt(Attempt(task_id=ep.task.id, task_text=ep.task.prompt,
                                               family=ep.task.family, text=t.text, reward=t.reward))
                self.curator.note_solution(ep.task.id, t.text)

    # -- folding ---------------------------------------------------------------------------------
    def _maybe_fold(self) -> None:
        every = self.cfg.loop.fold_every
        self._since_fold += 1
        if every is None or self._since_fold < every or self.fold is None:
            return
        self._since_fold = 0
        self.emit(ev.FoldStarted(episodes=self.report.episodes))
        try:  # the fold reloads the live policy's weights when its gate passes
            accepted, detail = self.fold()
        except ValueError as e:  # too little data to fold yet: reported, and learning goes on
            self.emit(ev.FoldFinished(episodes=self.report.episodes, ok=False, detail={"error": str(e)}))
            return
        self.report.folds += 1
        if accepted:
            # The policy now serves new weights: the admission test's no-candidate scores were taken
            # with the old ones, so they are dropped and re-scored on first use. Memory items keep
            # their credit history; the next training episodes credit them against the new weights.
            reset = getattr(self.curator.admission, "reset", None)
            if reset is not None:
                reset()
        self.emit(ev.FoldFinished(episodes=self.report.episodes, ok=accepted, detail=detail))

    # -- evaluation ------------------------------------------------------------------------------
    def evaluate(self, tasks: Sequence[Task], use_memory: bool, budget: Budget) -> EvalReport:
        """Accuracy with frozen memory (retrieval without the training bonus; nothing is written)."""
        start, used = self.clock(), {}
        mem = self.cfg.memory

        def insights_for(task: Task) -> list[Hint]:
            if not use_memory or not mem.top_k:
                return []
            found = self.store.retrieve(task, mem.top_k, False, mem.prompt_token_budget)
            used[task.id] = [i.id for i in found]
            return hints_of(found)

        eps = solve_many(list(tasks), self.policy, self.eval_search(), insights_for, budget=budget,
                         max_active=self.cfg.policy.max_batch, clock=self.clock)
        items = [EvalItem.of(ep, used.get(ep.task.id, [])) for ep in eps]
        return EvalReport(use_memory=use_memory, items=items, seconds=self.clock() - start)
