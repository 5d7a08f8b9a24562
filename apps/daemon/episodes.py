"""Running one episode for the daemon: under the budget windows, with its outcome classified.

The learner gets a budget holding what is left in every spend window; whatever it spent is recorded
afterwards, even when the episode raised. The outcome tells the daemon's step apart: a stop request
(the episode is abandoned and retried on the next start), a backend that failed every call (the
daemon pauses; the task is not charged an attempt), an error of the task's own (retried up to
`max_task_attempts`), or a finished episode.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Protocol

from insightloop.apps.daemon.guard import CallStats, StopRequested
from insightloop.apps.daemon.state import transaction
from insightloop.apps.daemon.windows import SpendWindows
from insightloop.core.budget import Budget
from insightloop.core.episode import Episode
from insightloop.core.task import Task
from pydantic import BaseModel

ALL_ERRORED = "every generation of the episode errored"


class EpisodeRunner(Protocol):
    """What the daemon needs of the learning loop (`agent.learn.loop.Learner` provides it):
    `respond` answers a task with the memory as it stands, then learns from it if it is labeled;
    `run_episode` is one training episode (self-practice)."""

    def run_episode(self, task: Task, train: bool, budget: Budget) -> Episode: ...

    def respond(self, task: Task, budget: Budget, learn: bool = True) -> Episode: ...


class Outcome(BaseModel):
    """One episode's result as the daemon sees it."""

    episode: Episode | None = None
    error: str | None = None
    backend_error: str | None = None  # set when the backend failed every call of the episode
    stopped: bool = False


class Episodes:
    """Runs episodes through the learner under what is left of the budget windows."""

    def __init__(self, learner: EpisodeRunner, stats: CallStats, windows: SpendWindows,
                 con: sqlite3.Connection, clock: Callable[[], float], log: logging.Logger) -> None:
        self.learner = learner
        self.stats = stats
        self.windows = windows
        self.con = con
        self.clock = clock
        self.log = log

    def run(self, task: Task, train: bool, respond: bool = False, learn: bool = True) -> Outcome:
        """Run one episode (with `respond`: answer, then learn if `learn`); record its spend whatever
        happened."""
        budget = self.windows.episode_budget(self.clock()).start(self.clock)
        self.stats.reset()
        try:
            ep = (self.learner.respond(task, budget, learn) if respond
                  else self.learner.run_episode(task, train, budget))
            out = Outcome(episode=ep)
        except StopRequested:
            out = Outcome(stopped=True)
        except Exception as e:  # the task is retried (or failed after max_task_attempts); the daemon goes on
            self.log.exception("episode_error", extra={"data": {"task": task.id}})
            out = Outcome(error=f"{type(e).__name__}: {e}")
        if not out.stopped and self.stats.all_failed:
            out.backend_error = out.error or self.stats.last_error or ALL_ERRORED
        with transaction(self.con):
            self.windows.record(self.clock(), budget)
            self.windows.prune(self.clock())  # the ledger only needs the longest window
        return out
