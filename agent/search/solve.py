"""Solve tasks into `Episode`s: one task with `solve`, a list with `solve_many`.

`solve_many` runs the searches of several tasks at once through `agent.search.driver.Batch`, so one
batch of generation carries the expansions and rollouts of many tasks. This module turns a finished
search into its episode: every verified trajectory, the best attempt, the answer (a value-weighted
vote when the task is unlabeled) and the spend. Progress goes out as typed events to `on_event`.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence

from insightloop.agent.search.driver import Batch, Clock, InsightsFor, Job, OnEvent, start_job
from insightloop.core.budget import Budget
from insightloop.core.config import SearchConfig
from insightloop.core.episode import Episode, SearchTree, Trajectory
from insightloop.core.lm import LM, Scorer
from insightloop.core.prompt import Hint
from insightloop.core.task import Reward, Task, Verifier
from insightloop.evals.verifiers import get_verifier

RngFor = Callable[[Task], random.Random]
VerifierFor = Callable[[Task], Verifier]


def default_verifier(task: Task) -> Verifier:
    """The verifier the task names."""
    return get_verifier(task.verifier)


def task_rng(task: Task, seed: int) -> random.Random:
    """A generator private to (seed, task), so batching with other tasks does not change a task's draws."""
    return random.Random(f"{seed}:{task.id}")


def new_episode_id(task: Task) -> str:
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", task.id)[:60]
    return f"{slug}-{uuid.uuid4().hex[:12]}"


def trajectories(tree: SearchTree) -> list[Trajectory]:
    """Every verified attempt in the tree: the path to a simulated node plus its rollout text."""
    out = []
    for node in tree.nodes:
        if node.reward is None:
            continue
        path = tree.path(node.id)
        out.append(Trajectory(node_ids=[n.id for n in path], steps=[n.step_text for n in path],
                              text=tree.path_text(node.id) + (node.rollout_text or ""), reward=node.reward,
                              parsed_answer=node.parsed_answer, visits=node.visits, value=node.value))
    return out


def vote(trajs: Sequence[Trajectory]) -> str | None:
    """Value-weighted vote over parsed answers: each attempt votes 1 + its value; ties go to the first."""
    weights: dict[str, float] = defaultdict(float)
    for t in trajs:
        if t.parsed_answer is not None and t.parsed_answer.strip():
            weights[t.parsed_answer.strip()] += 1.0 + t.value
    return max(weights, key=lambda a: weights[a]) if weights else None


def best_of(trajs: Sequence[Trajectory], answer: str | None = None) -> Trajectory | None:
    """Highest reward, then value (first on ties); restricted to attempts giving `answer` if set."""
    pool = [t for t in trajs if answer is None or (t.parsed_answer or "").strip() == answer]
    return max(pool, key=lambda t: (t.reward, t.value)) if pool else None


def finish_episode(job: Job, clock: Clock) -> Episode:
    """Fill the episode from the finished search: trajectories, best attempt, answer, spend."""
    ep, domain = job.episode, job.domain
    ep.tree = job.search.tree
    ep.trajectories = trajectories(ep.tree)
    voted = vote(ep.trajectories)
    if not domain.verifiable:  # unlabeled: rewards carry no signal, so the vote decides
        ep.best = best_of(ep.trajectories, voted) or best_of(ep.trajectories)
        ep.answer = voted
    else:
        ep.best = best_of(ep.trajectories)
        ep.answer = ep.best.parsed_answer if ep.best else None
        ep.reward = domain.score(ep.best.text) if ep.best else Reward(score=0.0, error="no attempt made")
        by_vote = best_of(ep.trajectories, voted)
        ep.meta["vote_correct"] = bool(by_vote and domain.score(by_vote.text).correct)
    ep.meta["vote_answer"] = voted
    ep.rollouts = job.budget.rollouts
    ep.prompt_tokens, ep.completion_tokens = job.budget.prompt_tokens, job.budget.completion_tokens
    ep.finished = clock()
    return ep


def solve(task: Task, lm: LM, cfg: SearchConfig, insights: Sequence[str | Hint] = (), budget: Budget | None = None,
          rng: random.Random | None = None, verifier: Verifier | None = None, *,
          on_event: OnEvent | None = None, episode_id: str | None = None,
          clock: Clock = time.time) -> Episode:
    """Solve one task with `cfg.strategy` under at most `cfg.rollouts` rollouts (and `budget`'s caps).

    The episode's spend is charged to a child of `budget` and merged back into it at the end.
    """
    rng = rng or task_rng(task, cfg.seed)

    def open_job(t: Task, own: Budget) -> Job:
        return start_job(t, cfg, insights, own, rng, verifier or default_verifier(t), clock,
                         episode_id or new_episode_id(t), isinstance(lm, Scorer))

    return Batch([task], cfg, open_job, finish_episode, budget, on_event, 1, clock).run(lm)[0]


def solve_many(tasks: Iterable[Task], lm: LM, cfg: SearchConfig, insights_for: InsightsFor | None = None, *,
               budget: Budget | None = None, verifier: Verifier | None = None, on_event: OnEvent | None = None,
               max_active: int = 32, clock: Clock = time.time, rng_for: RngFor | None = None,
               verifier_for: VerifierFor | None = None, episode_ids: dict[str, str] | None = None,
               ) -> list[Episode]:
    """Solve tasks with up to `max_active` searches in flight (see `agent.search.driver`).

    Episodes come back in task order. With a run-level `budget`, each task reserves up to
    `cfg.rollouts` of what is left when it starts, so the run never exceeds the budget's rollouts.
    A task is checked by `verifier`, else `verifier_for(task)`, else the verifier it names. Its
    randomness is `task_rng(task, cfg.seed)` unless `rng_for` gives another (repeated training
    episodes of one task must not repeat each other). `episode_ids` may name episodes by task id
    (`insights_for`, called first for each task, may fill it in).
    """
    check = verifier_for or default_verifier

    def open_job(task: Task, own: Budget) -> Job:
        insights = list(insights_for(task)) if insights_for else []
        rng = rng_for(task) if rng_for else task_rng(task, cfg.seed)
        ep_id = (episode_ids or {}).get(task.id) or new_episode_id(task)
        return start_job(task, cfg, insights, own, rng, verifier or check(task), clock, ep_id,
                         isinstance(lm, Scorer))

    return Batch(tasks, cfg, open_job, finish_episode, budget, on_event, max_active, clock).run(lm)
