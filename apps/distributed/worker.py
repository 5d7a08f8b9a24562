"""An episode worker: one policy (its own, or a client of shared generation servers) and one
learner, writing through the memory writer; the driver sends it `EpisodeOrder`s one at a time.

The worker is a plain class, so a test can run it in-process on fakes; the driver makes it a Ray
actor (`cluster.spawn_worker`). It holds the policy and analyst the runtime factory builds from the
config — an hf model of its own, or the litellm backend calling shared servers (`policy.api_base`),
whichever the config says — wrapped in the daemon's guard (retries with backoff, error counts), and
a `Learner` over a `ProxyMemory`. Learning is the same loop as in one process; only the memory is
reached through the writer, and folding is left to the driver (it folds every `loop.fold_every`
episodes of all workers together).

An order says which checkpoint to serve: a fold accepted by the gate moves the run's CURRENT, the
driver puts that checkpoint in the next orders, and each worker loads it before its next episode.
Verified chains the loop writes go to a scratch folder of the worker's and are sent to the writer
with the episode's last writes, so the run's chain buffer has one writer too.
"""

from __future__ import annotations

import os
import random
import socket
import tempfile
import threading
import time
import traceback
from pathlib import Path

from insightloop.agent.learn.loop import Learner
from insightloop.apps.daemon.episodes import ALL_ERRORED, Outcome
from insightloop.apps.daemon.guard import CallStats, GuardedLM, StopRequested, guard
from insightloop.apps.distributed.proxy import ProxyMemory, Transport
from insightloop.apps.runtime import Runtime
from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.core.episode import Chain
from insightloop.core.events import Event
from insightloop.core.lm import LM, Reloadable
from insightloop.core.task import Task
from insightloop.memory.chains import CHAINS_FILE, load_chains
from pydantic import BaseModel, Field


class EpisodeOrder(BaseModel):
    """One episode for a worker: the task, how to run it, its caps, the weights to serve.

    `respond` (an inbox task): answer with the memory as it stands, then learn from a labeled task when
    `learn` (`Learner.respond`, as the single-process daemon does); else one episode, training when
    `train` (self-practice: `Learner.run_episode`)."""

    key: str
    task: Task
    train: bool
    respond: bool = False
    learn: bool = True
    budget: Budget = Field(default_factory=Budget)
    checkpoint: str | None = Field(None, description="the checkpoint folder to serve (None: base weights)")


class EpisodeReply(BaseModel):
    """What a worker hands back: the outcome as the daemon classifies it, the spend, the loop's events."""

    key: str
    worker: str
    outcome: Outcome
    spend: Budget
    events: list[Event] = Field(default_factory=list)
    trace: str | None = Field(None, description="the traceback of an episode that raised")
    writes: int = Field(0, description="memory writes the episode sent")
    exchanges: int = Field(0, description="exchanges with the memory writer the episode made")
    served: str | None = Field(None, description="the checkpoint the worker served (None: base weights)")
    seconds: float = 0.0


class WorkerInfo(BaseModel):
    """Where a worker runs."""

    name: str
    pid: int
    node: str


def episode_config(cfg: Config) -> Config:
    """The config a worker's learner runs with: no folding in the loop (the driver folds)."""
    return cfg.model_copy(update={"loop": cfg.loop.model_copy(update={"fold_every": None})})


class EpisodeWorker:
    """Runs episodes for the driver (see the module docstring)."""

    def __init__(self, cfg: Config, name: str, transport: Transport, scratch: str | Path | None = None, *,
                 seed: int = 0, policy: LM | None = None, analyst: LM | None = None) -> None:
        self.cfg = episode_config(cfg)
        self.name = name
        self.scratch = Path(scratch) if scratch is not None else Path(tempfile.mkdtemp(prefix=f"il-{name}-"))
        self.stats, self.stop = CallStats(), threading.Event()
        d = cfg.daemon

        def wrap(lm: LM) -> GuardedLM:  # the daemon's guard, keeping a backend's answer scoring
            return guard(lm, self.stats, self.stop, d.lm_retries, d.lm_backoff_s)

        self.runtime = Runtime(self.cfg, self.scratch, policy=wrap(policy) if policy is not None else None,
                               analyst=wrap(analyst) if analyst is not None else None, wrap_lm=wrap)
        self.memory = ProxyMemory(transport, name, cfg.ray.batch_ops)
        self.events: list[Event] = []
        self.rng = random.Random(seed)
        self._learner: Learner | None = None
        self.loaded: str | None = None

    @property
    def learner(self) -> Learner:
        """The learning loop over this worker's policy and the proxied memory (built on first use)."""
        if self._learner is None:
            rt = self.runtime
            self._learner = Learner(rt.policy, rt.analyst, self.memory, self.cfg, self.rng, self.events.append,
                                    run_dir=self.scratch)
        return self._learner

    def info(self) -> WorkerInfo:
        return WorkerInfo(name=self.name, pid=os.getpid(), node=socket.gethostname())

    def warm(self) -> WorkerInfo:
        """Load the models now (the first episode would otherwise pay for it)."""
        _ = self.learner
        return self.info()

    def run(self, order: EpisodeOrder) -> EpisodeReply:
        """One episode end to end; never raises for the episode's own faults (they are in the reply)."""
        start, exchanges, sent = time.monotonic(), self.memory.exchanges, self.memory.sent
        self.memory.discard()  # a previous episode's unsent writes died with it
        self.events.clear()
        self._serve(order.checkpoint)
        budget = order.budget.model_copy().start()
        outcome, trace = self._episode(order, budget)
        try:
            self.memory.add_chains(self._new_chains())
            self.memory.flush()
        except Exception as e:  # the episode's writes did not reach the memory: it must run again
            self.memory.discard()
            outcome = Outcome(error=f"memory writer: {type(e).__name__}: {e}")
            trace = traceback.format_exc()
        return EpisodeReply(key=order.key, worker=self.name, outcome=outcome, spend=budget,
                            events=list(self.events), trace=trace, writes=self.memory.sent - sent,
                            exchanges=self.memory.exchanges - exchanges, served=self.loaded,
                            seconds=time.monotonic() - start)

    def _episode(self, order: EpisodeOrder, budget: Budget) -> tuple[Outcome, str | None]:
        """Run the learner; classify the result as the single-process daemon does."""
        self.stats.reset()
        trace = None
        try:
            ep = (self.learner.respond(order.task, budget, order.learn) if order.respond
                  else self.learner.run_episode(order.task, order.train, budget))
            out = Outcome(episode=ep)
        except StopRequested:
            out = Outcome(stopped=True)
        except Exception as e:  # the task is retried (or failed after max_task_attempts) by the driver
            out = Outcome(error=f"{type(e).__name__}: {e}")
            trace = traceback.format_exc()
        if not out.stopped and self.stats.all_failed:
            out.backend_error = out.error or self.stats.last_error or ALL_ERRORED
        return out, trace

    def _serve(self, checkpoint: str | None) -> None:
        """Load the checkpoint the driver names, once (a shared server reloads on its own side)."""
        if checkpoint is None or checkpoint == self.loaded:
            return
        policy = self.runtime.policy
        inner = policy.inner if isinstance(policy, GuardedLM) else policy
        if isinstance(inner, Reloadable):
            policy.load_weights(checkpoint)  # type: ignore[attr-defined]
        self.loaded = checkpoint

    def _new_chains(self) -> list[Chain]:
        """Chains the loop wrote to the scratch folder since the last episode (then removed there)."""
        path = self.scratch / CHAINS_FILE
        if not path.exists():
            return []
        chains = load_chains(self.scratch)
        path.unlink()
        return chains

    def close(self) -> None:
        self.stop.set()
        self.runtime.close()
