"""Solve tasks into `Episode`s: one task with `solve`, a list with `solve_many`.

`solve_many` interleaves the searches of several tasks: every search is a generator that yields
the requests it needs next (see `agent.search.domain.SearchRun`); the driver steps all active
searches in lockstep and serves their requests with ONE `lm.generate` call, so each LM call carries
the expansions and rollouts of many tasks. Each task's randomness comes from its own
`random.Random` (seeded from the search seed and the task id), so a task's episode does not depend
on which other tasks share its batches when the backend is batch-invariant.

Progress is reported through typed events to an optional `on_event` callback.
"""

from __future__ import annotations

import random
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Literal

from insightloop.agent.search.domain import ReasoningDomain, Search, SearchRun
from insightloop.agent.search.mcts import MCTS
from insightloop.agent.search.sample import Sampler
from insightloop.core.budget import Budget
from insightloop.core.config import SearchConfig
from insightloop.core.episode import Episode, SearchTree, Trajectory
from insightloop.core.files import atomic_write
from insightloop.core.lm import LM, Generation, GenRequest
from insightloop.core.task import Reward, Task, Verifier
from pydantic import BaseModel, Field


class EpisodeStarted(BaseModel):
    kind: Literal["episode_started"] = "episode_started"
    episode_id: str
    task_id: str
    strategy: str
    insights: int = 0


class EpisodeFinished(BaseModel):
    kind: Literal["episode_finished"] = "episode_finished"
    episode_id: str
    task_id: str
    answer: str | None
    score: float | None
    correct: bool | None
    rollouts: int
    tokens: int
    seconds: float
    # The finished record itself, for in-process subscribers (saving, memory); left out of dumps.
    episode: Episode | None = Field(None, exclude=True, repr=False)


SolveEvent = EpisodeStarted | EpisodeFinished
OnEvent = Callable[[SolveEvent], None]
Clock = Callable[[], float]


def default_verifier(task: Task) -> Verifier:
    """The verifier the task names (imported lazily: the suites module is heavy)."""
    from insightloop.evals.verifiers import get_verifier

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


class _Job:
    """One task in flight: its episode, domain, search generator and the requests it waits on."""

    def __init__(self, episode: Episode, domain: ReasoningDomain, search: Search, budget: Budget):
        self.episode = episode
        self.domain = domain
        self.search = search
        self.budget = budget
        self.run: SearchRun = search.run()
        self.pending: list[GenRequest] = []

    def advance(self, replies: list[list[Generation]] | None) -> bool:
        """Feed replies (None to start); return False once the search has finished."""
        try:
            self.pending = next(self.run) if replies is None else self.run.send(replies)
        except StopIteration:
            self.pending = []
            return False
        return True


def _start(task: Task, cfg: SearchConfig, insights: Sequence[str], budget: Budget, rng: random.Random,
           verifier: Verifier, clock: Clock, episode_id: str | None) -> _Job:
    domain = ReasoningDomain(task, cfg, verifier, insights)
    search: Search = (MCTS if cfg.strategy == "mcts" else Sampler)(domain, budget, rng)
    episode = Episode(id=episode_id or new_episode_id(task), task=task, insights_used=list(insights),
                      prompt=domain.messages[-1].content, strategy=cfg.strategy, started=clock(),
                      meta={"search": cfg.model_dump(), "system": domain.messages[0].content})
    return _Job(episode, domain, search, budget)


def _finish(job: _Job, clock: Clock) -> Episode:
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


def _finished_event(ep: Episode) -> EpisodeFinished:
    labeled = ep.reward is not None
    return EpisodeFinished(episode_id=ep.id, task_id=ep.task.id, answer=ep.answer,
                           score=ep.reward.score if ep.reward else None,
                           correct=ep.correct if labeled else None, rollouts=ep.rollouts,
                           tokens=ep.prompt_tokens + ep.completion_tokens, seconds=ep.seconds, episode=ep)


def _serve(lm: LM, jobs: list[_Job]) -> list[_Job]:
    """One LM call for the pending requests of all jobs; returns the jobs that finished."""
    reqs = [r for j in jobs for r in j.pending]
    replies = lm.generate(reqs)
    if len(replies) != len(reqs):
        raise RuntimeError(f"{lm.name} returned {len(replies)} results for {len(reqs)} requests")
    done, at = [], 0
    for job in jobs:
        part, at = replies[at:at + len(job.pending)], at + len(job.pending)
        if not job.advance(part):
            done.append(job)
    return done


def solve(task: Task, lm: LM, cfg: SearchConfig, insights: Sequence[str] = (), budget: Budget | None = None,
          rng: random.Random | None = None, verifier: Verifier | None = None, *,
          on_event: OnEvent | None = None, episode_id: str | None = None,
          clock: Clock = time.time) -> Episode:
    """Solve one task with `cfg.strategy` under at most `cfg.rollouts` rollouts (and `budget`'s caps).

    The episode's spend is charged to a child of `budget` and merged back into it at the end.
    """
    own = budget.child(cfg.rollouts) if budget else Budget(max_rollouts=cfg.rollouts).start()
    rng = rng or task_rng(task, cfg.seed)
    job = _start(task, cfg, insights, own, rng, verifier or default_verifier(task), clock, episode_id)
    if on_event:
        on_event(EpisodeStarted(episode_id=job.episode.id, task_id=task.id, strategy=cfg.strategy,
                                insights=len(insights)))
    running = job.advance(None)
    while running:
        running = not _serve(lm, [job])
    return _close(job, budget, clock, on_event)


def _close(job: _Job, budget: Budget | None, clock: Clock, on_event: OnEvent | None) -> Episode:
    ep = _finish(job, clock)
    if budget is not None:
        budget.absorb(job.budget)
    if on_event:
        on_event(_finished_event(ep))
    return ep


def solve_many(tasks: Iterable[Task], lm: LM, cfg: SearchConfig,
               insights_for: Callable[[Task], Sequence[str]] | None = None, *, budget: Budget | None = None,
               verifier: Verifier | None = None, on_event: OnEvent | None = None, max_active: int = 8,
               clock: Clock = time.time) -> list[Episode]:
    """Solve tasks with up to `max_active` searches in flight, one LM call per lockstep round.

    Episodes come back in task order. With a run-level `budget`, each task reserves up to
    `cfg.rollouts` of what is left when it starts, so the run never exceeds the budget's rollouts.
    """
    queue = list(enumerate(tasks))[::-1]
    episodes: dict[int, Episode] = {}
    active: dict[int, _Job] = {}
    while queue or active:
        while queue and len(active) < max_active:
            idx, task = queue.pop()
            job = _open(task, cfg, insights_for, budget, active, verifier, on_event, clock)
            if job.advance(None):
                active[idx] = job
            else:
                episodes[idx] = _close(job, budget, clock, on_event)
        if not active:
            continue
        for job in _serve(lm, list(active.values())):
            idx = next(i for i, j in active.items() if j is job)
            episodes[idx] = _close(active.pop(idx), budget, clock, on_event)
    return [episodes[i] for i in sorted(episodes)]


def _open(task: Task, cfg: SearchConfig, insights_for: Callable[[Task], Sequence[str]] | None,
          budget: Budget | None, active: dict[int, _Job], verifier: Verifier | None,
          on_event: OnEvent | None, clock: Clock) -> _Job:
    """Start one task's search with its own budget (a reservation out of the run budget, if any)."""
    if budget is None:
        own = Budget(max_rollouts=cfg.rollouts).start()
    else:
        left = budget.remaining_rollouts()
        # In-flight spend reaches the run budget only when a job closes, so reserve whole caps.
        reserved = sum(j.budget.max_rollouts or 0 for j in active.values())
        cap = cfg.rollouts if left is None else max(0, min(cfg.rollouts, left - reserved))
        own = budget.child(cap)
    insights = list(insights_for(task)) if insights_for else []
    job = _start(task, cfg, insights, own, task_rng(task, cfg.seed), verifier or default_verifier(task),
                 clock, None)
    if on_event:
        on_event(EpisodeStarted(episode_id=job.episode.id, task_id=task.id, strategy=cfg.strategy,
                                insights=len(insights)))
    return job


class TaskRow(BaseModel):
    """One task's line in a solve report."""

    task_id: str
    answer: str | None
    reference: str | None
    correct: bool | None
    rollouts: int
    tokens: int
    seconds: float


class SolveSummary(BaseModel):
    """Figures for a set of episodes: accuracy over labeled tasks, spend per task."""

    strategy: str
    tasks: int
    labeled: int
    correct: int
    accuracy: float | None
    vote_accuracy: float | None
    rollouts: int
    tokens: int
    seconds: float
    rollouts_per_task: float
    tokens_per_task: float
    seconds_per_task: float
    rows: list[TaskRow]


def summarize(episodes: Sequence[Episode], strategy: str, seconds: float | None = None) -> SolveSummary:
    """Accuracy (best attempt, verified) and vote accuracy over labeled tasks, plus spend per task.

    `seconds` is the run's wall time; by default the sum of episode times (they overlap in a batch).
    """
    rows = [TaskRow(task_id=e.task.id, answer=e.answer, reference=e.task.answer,
                    correct=e.correct if e.reward is not None else None, rollouts=e.rollouts,
                    tokens=e.prompt_tokens + e.completion_tokens, seconds=round(e.seconds, 3))
            for e in episodes]
    labeled = [e for e in episodes if e.reward is not None]
    n = max(len(episodes), 1)
    wall = sum(e.seconds for e in episodes) if seconds is None else seconds
    correct = sum(e.correct for e in labeled)
    voted = sum(bool(e.meta.get("vote_correct")) for e in labeled)
    return SolveSummary(
        strategy=strategy, tasks=len(episodes), labeled=len(labeled), correct=correct,
        accuracy=correct / len(labeled) if labeled else None,
        vote_accuracy=voted / len(labeled) if labeled else None,
        rollouts=sum(r.rollouts for r in rows), tokens=sum(r.tokens for r in rows), seconds=round(wall, 3),
        rollouts_per_task=sum(r.rollouts for r in rows) / n, tokens_per_task=sum(r.tokens for r in rows) / n,
        seconds_per_task=round(wall / n, 3), rows=rows)


def save_episode(run_dir: str | Path, ep: Episode) -> Path:
    """Write RUN_DIR/episodes/<id>.json atomically (temp name, then os.replace)."""
    dest = Path(run_dir) / "episodes" / f"{ep.id}.json"
    atomic_write(dest, ep.model_dump_json())
    return dest
