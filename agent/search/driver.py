"""Drives searches against an LM: one job per task, its requests served in batches.

A search is a generator that yields the requests it needs next (`agent.search.domain.SearchRun`).
`Batch` keeps up to `max_active` of them in flight and serves them in one of two ways:

- **streaming** (`StreamingLM`, e.g. the hf backend): every request is submitted as soon as its
  search yields it and each search resumes as soon as its own replies are complete, so a backend
  with continuous batching keeps its batch full while slow searches are still decoding;
- **lockstep** (any `LM`): all active searches' requests go out in one `generate` call per round.

Scoring requests (a closed answer set's options, `ScoreRequest`) go to the LM's `score` at once:
they are short teacher-forced passes over prompts the backend has just cached.

Each task's randomness comes from its own `random.Random`, so an episode does not depend on which
other tasks share its batches when the backend is batch-invariant. With a run-level budget each
task reserves up to `cfg.rollouts` of what is left when it starts, so a run never exceeds it.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence

from insightloop.agent.search.domain import ReasoningDomain, Reply, Request, Search, SearchRun
from insightloop.agent.search.mcts import MCTS
from insightloop.agent.search.sample import Sampler
from insightloop.core.budget import Budget
from insightloop.core.config import SearchConfig
from insightloop.core.episode import Episode
from insightloop.core.events import EpisodeFinished, EpisodeStarted, Event
from insightloop.core.lm import LM, Generation, GenRequest, GenStream, Scorer, ScoreRequest, StreamingLM
from insightloop.core.prompt import Hint
from insightloop.core.task import Task, Verifier

OnEvent = Callable[[Event], None]
Clock = Callable[[], float]
InsightsFor = Callable[[Task], Sequence[str | Hint]]
Finish = Callable[["Job", Clock], Episode]


class Job:
    """One task in flight: its episode, domain, search generator and the requests it waits on."""

    def __init__(self, episode: Episode, domain: ReasoningDomain, search: Search, budget: Budget):
        self.episode = episode
        self.domain = domain
        self.search = search
        self.budget = budget
        self.run: SearchRun = search.run()
        self.pending: list[Request] = []
        self.replies: list[Reply | None] = []

    def advance(self, replies: list[Reply] | None) -> bool:
        """Feed replies (None to start); return False once the search has finished."""
        try:
            self.pending = next(self.run) if replies is None else self.run.send(replies)
        except StopIteration:
            self.pending = []
            return False
        self.replies = [None] * len(self.pending)
        return True


def start_job(task: Task, cfg: SearchConfig, insights: Sequence[str | Hint], budget: Budget, rng: random.Random,
              verifier: Verifier, clock: Clock, episode_id: str, can_score: bool = False) -> Job:
    domain = ReasoningDomain(task, cfg, verifier, insights, can_score)
    search: Search = (MCTS if cfg.strategy == "mcts" else Sampler)(domain, budget, rng)
    hints = [Hint.of(h) for h in insights]
    episode = Episode(id=episode_id, task=task, insights_used=[h.text for h in hints],
                      prompt=domain.messages[-1].content, strategy=cfg.strategy, started=clock(),
                      meta={"search": cfg.model_dump(), "system": domain.messages[0].content,
                            "examples": sum(h.kind == "example" for h in hints)})
    return Job(episode, domain, search, budget)


def started_event(job: Job, cfg: SearchConfig) -> EpisodeStarted:
    return EpisodeStarted(episode_id=job.episode.id, task_id=job.episode.task.id,
                          family=job.episode.task.family, strategy=cfg.strategy)


def finished_event(ep: Episode) -> EpisodeFinished:
    labeled = ep.reward is not None
    return EpisodeFinished(episode_id=ep.id, task_id=ep.task.id, answer=ep.answer,
                           reward=ep.reward.score if ep.reward else None,
                           correct=ep.correct if labeled else None, rollouts=ep.rollouts,
                           prompt_tokens=ep.prompt_tokens, completion_tokens=ep.completion_tokens,
                           seconds=ep.seconds, episode=ep)


class Batch:
    """Up to `max_active` searches in flight over one LM (see the module docstring)."""

    def __init__(self, tasks: Iterable[Task], cfg: SearchConfig, open_job: Callable[[Task, Budget], Job],
                 finish: Finish, budget: Budget | None, on_event: OnEvent | None, max_active: int,
                 clock: Clock) -> None:
        self.queue = list(enumerate(tasks))[::-1]
        self.cfg = cfg
        self.open_job = open_job
        self.finish = finish
        self.budget = budget
        self.on_event = on_event
        self.max_active = max_active
        self.clock = clock
        self.active: dict[int, Job] = {}
        self.episodes: dict[int, Episode] = {}

    def run(self, lm: LM) -> list[Episode]:
        """Solve every task; episodes come back in task order."""
        self.lm = lm
        if isinstance(lm, StreamingLM):
            with lm.stream() as stream:
                self._stream(stream)
        else:
            self._lockstep(lm)
        return [self.episodes[i] for i in sorted(self.episodes)]

    # ---- opening and closing jobs --------------------------------------------------------------

    def _own_budget(self) -> Budget:
        """A job's budget: a reservation out of the run budget, if any (in-flight spend reaches the
        run budget only when a job closes, so whole caps are reserved)."""
        if self.budget is None:
            return Budget(max_rollouts=self.cfg.rollouts).start()
        left = self.budget.remaining_rollouts()
        reserved = sum(j.budget.max_rollouts or 0 for j in self.active.values())
        cap = self.cfg.rollouts if left is None else max(0, min(self.cfg.rollouts, left - reserved))
        return self.budget.child(cap)

    def _fill(self) -> list[int]:
        """Start queued tasks up to `max_active`; returns the indices of those now waiting on the LM."""
        started = []
        while self.queue and len(self.active) < self.max_active:
            idx, task = self.queue.pop()
            job = self.open_job(task, self._own_budget())
            if self.on_event:
                self.on_event(started_event(job, self.cfg))
            if job.advance(None):
                self.active[idx] = job
                started.append(idx)
            else:
                self._close(idx, job)
        return started

    def _close(self, idx: int, job: Job) -> None:
        ep = self.finish(job, self.clock)
        if self.budget is not None:
            self.budget.absorb(job.budget)
        if self.on_event:
            self.on_event(finished_event(ep))
        self.episodes[idx] = ep

    # ---- lockstep ------------------------------------------------------------------------------

    def _lockstep(self, lm: LM) -> None:
        self._fill()
        while self.active:
            jobs = list(self.active.items())
            replies = self._serve([r for _, j in jobs for r in j.pending])
            at = 0
            for idx, job in jobs:
                part, at = replies[at : at + len(job.pending)], at + len(job.pending)
                if not job.advance(part):
                    self._close(idx, self.active.pop(idx))
            self._fill()

    def _serve(self, reqs: list[Request]) -> list[Reply]:
        """Generations for the `GenRequest`s in one call, scores for the `ScoreRequest`s in another."""
        gen_at = [i for i, r in enumerate(reqs) if isinstance(r, GenRequest)]
        score_at = [i for i, r in enumerate(reqs) if isinstance(r, ScoreRequest)]
        out: list[Reply | None] = [None] * len(reqs)
        if gen_at:
            gens = self.lm.generate([reqs[i] for i in gen_at])  # type: ignore[misc]
            if len(gens) != len(gen_at):
                raise RuntimeError(f"{self.lm.name} returned {len(gens)} results for {len(gen_at)} requests")
            for i, g in zip(gen_at, gens, strict=True):
                out[i] = g
        if score_at:
            for i, s in zip(score_at, self._score([reqs[i] for i in score_at]), strict=True):  # type: ignore[misc]
                out[i] = s
        return [r for r in out if r is not None]

    def _score(self, reqs: list[ScoreRequest]) -> list[Reply]:
        if not isinstance(self.lm, Scorer):
            raise TypeError(f"{self.lm.name} cannot score answer options; set search.answer_mode=free")
        return list(self.lm.score(reqs))

    # ---- streaming -----------------------------------------------------------------------------

    def _stream(self, stream: GenStream) -> None:
        for idx in self._fill():
            self._submit(stream, idx)
        while self.active:
            done = stream.wait()
            if not done:
                raise RuntimeError("the LM stream went idle while searches still wait on it")
            for key, gens in done:
                self._deliver(stream, key, gens)

    def _submit(self, stream: GenStream, idx: int) -> None:
        job = self.active[idx]
        # Steps that need no generation (nothing, or answer scores) are served here and resume at once.
        while not any(isinstance(r, GenRequest) for r in job.pending):
            if not job.advance(self._serve(job.pending) if job.pending else []):
                self._close(idx, self.active.pop(idx))
                for new in self._fill():
                    self._submit(stream, new)
                return
        for k, req in enumerate(job.pending):
            if isinstance(req, GenRequest):
                stream.submit((idx, k), req)
            else:
                job.replies[k] = self._score([req])[0]

    def _deliver(self, stream: GenStream, key: Hashable, gens: list[Generation]) -> None:
        idx, k = key  # type: ignore[misc]
        job = self.active[idx]
        job.replies[k] = gens
        if any(r is None for r in job.replies):
            return
        if job.advance([r for r in job.replies if r is not None]):
            self._submit(stream, idx)
            return
        self._close(idx, self.active.pop(idx))
        for new in self._fill():
            self._submit(stream, new)
