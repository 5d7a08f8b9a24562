"""The daemon's state machine: inbox tasks first, self-practice when there is nothing to do.

`Daemon.run_once()` is one step (tests drive it directly, with a fake learner and an injected
clock): it checks the budget windows and backend health, then resumes a file in `processing/` or
claims one from `inbox/`, runs one task through the learner and commits its result; with nothing to
do it practises on `cfg.daemon.practice_suites` (failure-biased, skipping mastered problems).
`work()` repeats steps until a stop is requested; `run.serve` runs it on a worker thread.

The parts: `ledger.InboxLedger` (which task is next, commits), `episodes.Episodes` (one episode
under the spend windows), `health.BackendHealth` (pauses for a failing backend), `practice.Practice`
and `report.StatusReporter` (status.json). A task counts as done only when its row in daemon.sqlite
says so, so a `kill -9` loses at most the episode in flight, which is retried on restart.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from insightloop.apps.daemon.episodes import EpisodeRunner, Episodes, Outcome
from insightloop.apps.daemon.guard import CallStats, StopRequested
from insightloop.apps.daemon.health import BackendHealth
from insightloop.apps.daemon.inbox import Inbox, PromptProblem
from insightloop.apps.daemon.ledger import InboxLedger, TaskRef, result_row
from insightloop.apps.daemon.practice import Practice, load_practice
from insightloop.apps.daemon.report import StatusReporter
from insightloop.apps.daemon.state import STATE_DB, open_state_db, transaction
from insightloop.apps.daemon.status import DaemonStatus, StatusBoard, close_log, log_event, open_log
from insightloop.apps.daemon.windows import SpendWindows
from insightloop.core.config import Config
from insightloop.core.events import Event, FoldFinished, FoldStarted
from insightloop.core.task import Task
from pydantic import BaseModel

PracticeLoader = Callable[[], list[tuple[str, Task]]]


class Step(BaseModel):
    """What one `run_once` call did."""

    kind: Literal["task", "practice", "task_failed", "retry", "backend_failed", "abandoned",
                  "paused", "idle", "stopped"]
    detail: str = ""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


class Daemon:
    """The daemon's state machine; `run_once` performs one step. Thread-free: `serve` adds threads."""

    def __init__(self, run_dir: Path, cfg: Config, learner: EpisodeRunner, *, stats: CallStats | None = None,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None, practice: PracticeLoader | None = None,
                 memory_version: Callable[[], int] | None = None,
                 checkpoint: Callable[[], str | None] | None = None,
                 logger: logging.Logger | None = None,
                 on_close: Callable[[], None] | None = None,
                 prompt_problem: PromptProblem | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg, self.dcfg = cfg, cfg.daemon
        self.stats = stats or CallStats()
        self.stop = stop or threading.Event()
        self.clock = clock
        self.rng = rng or random.Random(cfg.seed)
        self.log = logger or open_log(self.run_dir, self.dcfg.log_max_bytes, self.dcfg.log_backups)
        self.inbox = Inbox(self.run_dir, clock, self.dcfg.inbox_settle_s)
        self.con = open_state_db(self.run_dir / STATE_DB)
        self.windows = SpendWindows(self.con, self.dcfg)
        self.ledger = InboxLedger(self.con, self.inbox, self.dcfg, clock, self.log, prompt_problem)
        self.episodes = Episodes(learner, self.stats, self.windows, self.con, clock, self.log)
        self.health = BackendHealth(self.dcfg, clock)
        self.board = StatusBoard(DaemonStatus(run_dir=str(self.run_dir), started_at=clock()))
        self.reporter = StatusReporter(self.run_dir, self.board, self.con, self.ledger, self.windows, self.dcfg,
                                       clock, memory_version, checkpoint)
        self._practice_loader = practice if practice is not None else self._suites_loader()
        self._practice: Practice | None = None
        self._paused: str | None = None
        self._on_close = on_close

    def _suites_loader(self) -> PracticeLoader | None:
        d = self.dcfg
        if not d.practice_suites:
            return None
        return lambda: load_practice(d.practice_suites, d.practice_limit, self.cfg.seed)

    # -- one step -----------------------------------------------------------------------------------

    def run_once(self) -> Step:
        """Do one unit of work: a paused check, or one inbox task, or one practice episode."""
        if self.stop.is_set():
            return Step(kind="stopped")
        pause = self._pause_reason(self.clock())
        if pause is not None:
            step = Step(kind="paused", detail=pause)
        else:
            self._note_pause(None)
            ref = self.ledger.next_task()
            step = self._run_inbox_task(ref) if ref is not None else self._run_practice()
        self.reporter.refresh()
        self.reporter.write_if_due()
        return step

    def _pause_reason(self, now: float) -> str | None:
        if self.health.paused(now):
            reason = (f"paused: backend failing: {self.health.error}; "
                      f"retrying at {_iso(self.health.until)}")
            until: float | None = self.health.until
        else:
            blocked = self.windows.blocked(now)
            if blocked is None:
                return None
            reason, until = f"paused: {blocked[0]} reached, resumes at {_iso(blocked[1])}", blocked[1]
        self._note_pause(reason, until)
        return reason

    def _note_pause(self, reason: str | None, until: float | None = None) -> None:
        """Show a pause in the status and log its start and end once each (not every step)."""
        if reason is not None:
            self.board.update(state=reason, current_task=None, paused_until=until)
            if self._paused is None:
                self.log.warning("paused", extra={"data": {"reason": reason, "until": until}})
        elif self._paused is not None:
            self.board.update(paused_until=None)
            self.log.info("resumed", extra={"data": {"after": self._paused}})
        self._paused = reason

    def _backend_failure(self, label: str, error: str) -> Step:
        self.health.failed(error)
        self.board.update(last_error=f"backend: {error}")
        self.log.warning("backend_failure", extra={"data": {"task": label, "error": error,
                                                            "streak": self.health.streak}})
        return Step(kind="backend_failed", detail=error)

    # -- inbox tasks --------------------------------------------------------------------------------

    def _run_inbox_task(self, ref: TaskRef) -> Step:
        label = ref.label
        self.board.update(state="working", current_task=label)
        out = self.episodes.run(ref.task, train=False, respond=True, learn=self.dcfg.learn)
        if out.stopped:
            self.log.info("abandoned", extra={"data": {"task": label}})
            return Step(kind="abandoned", detail=label)
        if out.backend_error is not None:
            return self._backend_failure(label, out.backend_error)
        self.health.ok()
        if out.error is not None:
            return self._task_error(ref, out.error)
        assert out.episode is not None
        result = result_row(ref.task, out.episode)
        self.ledger.commit(ref, "done", result, result.get("reward"))
        return Step(kind="task", detail=label)

    def _task_error(self, ref: TaskRef, error: str) -> Step:
        """The episode raised: retry the task later, or fail it after `max_task_attempts`."""
        attempts = self.ledger.bump_attempts(ref, error)
        self.board.update(last_error=f"{ref.label}: {error}")
        if attempts < self.dcfg.max_task_attempts:
            return Step(kind="retry", detail=f"{ref.label}: {error}")
        result = {"id": ref.task.id, "error": f"failed after {attempts} attempts: {error}"}
        self.ledger.commit(ref, "failed", result, None)
        return Step(kind="task_failed", detail=f"{ref.label}: {error}")

    # -- self-practice ------------------------------------------------------------------------------

    def _practice_pool(self) -> Practice | None:
        """The practice problems, loaded on first use (once: a failed load is reported, not retried)."""
        if self._practice is None and self._practice_loader is not None:
            loader, self._practice_loader = self._practice_loader, None
            try:
                tasks = loader()
            except Exception as e:  # a bad suite name must not stop inbox work; it is reported
                self.log.exception("practice_load_failed")
                self.board.update(last_error=f"practice suites: {type(e).__name__}: {e}")
                return None
            self._practice = Practice(self.con, tasks, self.rng, self.dcfg.mastery_streak)
        return self._practice

    def _run_practice(self) -> Step:
        pool = self._practice_pool()
        item = pool.pick() if pool is not None else None
        if pool is None or item is None:
            self.board.update(state="idle", current_task=None)
            return Step(kind="idle")
        key, task = item
        self.board.update(state="practising", current_task=f"practice {key}")
        out = self.episodes.run(task, train=True)
        if out.stopped:
            return Step(kind="abandoned", detail=key)
        if out.backend_error is not None:
            return self._backend_failure(key, out.backend_error)
        self.health.ok()
        self._record_practice(pool, key, out)
        if out.error is not None:
            self.board.update(last_error=f"practice {key}: {out.error}")
            return Step(kind="task_failed", detail=f"practice {key}: {out.error}")
        return Step(kind="practice", detail=key)

    def _record_practice(self, pool: Practice, key: str, out: Outcome) -> None:
        """Count the attempt (a raised episode counts as a miss); only a finished episode is scored."""
        ep = out.episode
        score = 0.0 if ep is None or ep.reward is None else ep.reward.score
        with transaction(self.con):
            pool.record(key, ep is not None and ep.correct, self.clock())
            if out.error is None:
                self.con.execute("INSERT INTO scores(ts, reward, source) VALUES (?,?,?)",
                                 (self.clock(), score, "practice"))

    # -- the long-running loop ----------------------------------------------------------------------

    def on_event(self, event: Event) -> None:
        """The learning loop's event sink: events go to the JSON-lines log; a fold (which runs inside
        the learning step, minutes on a CPU) shows in the status while it runs and when it ends."""
        log_event(self.log, event)
        if isinstance(event, FoldStarted):
            self.board.update(state="folding: training, then the gate on held-out problems")
            self.reporter.write()
        elif isinstance(event, FoldFinished):
            verdict = "accepted" if event.ok else str(event.detail.get("error", "rejected"))
            self.log.info("fold_result", extra={"data": {"verdict": verdict, **event.detail}})
            self.reporter.refresh()
            self.board.update(state="working")
            self.reporter.write()

    def _back_off(self, e: Exception, faults: int) -> None:
        """A fault outside any episode (disk full, ...): log and show it, then wait, longer each time."""
        self.log.exception("step_error")
        err = f"{type(e).__name__}: {e}"
        self.board.update(state=f"error: {err}", last_error=err)
        self.stop.wait(min(60.0, self.dcfg.poll_seconds * 2 ** min(faults, 6)))

    def work(self, exit_when_idle: bool = False) -> None:
        """Steps until a stop is requested (or, with `exit_when_idle`, until there is nothing to do)."""
        faults = 0
        while not self.stop.is_set():
            try:
                step = self.run_once()
                faults = 0
            except StopRequested:
                break
            except Exception as e:  # a fault outside any episode (disk full, ...): report, back off, go on
                faults += 1
                self._back_off(e, faults)
                continue
            if step.kind == "idle" and exit_when_idle:
                break
            if step.kind in ("idle", "paused"):
                self.stop.wait(self.dcfg.poll_seconds)

    def close(self, abandoned: bool = False) -> None:
        """Final status and log lines; the state DB is closed unless a worker may still use it."""
        state = "stopped"
        if abandoned:  # the worker still holds the state DB inside its LM call: leave it alone
            state += ": abandoned the episode in flight (retried on the next start)"
        else:
            self.reporter.refresh()
        self.board.update(state=state, current_task=None)
        self.reporter.write()
        self.log.info("stopped", extra={"data": {"abandoned": abandoned}})
        close_log(self.log)
        if not abandoned:
            self.con.close()
            if self._on_close is not None:
                self._on_close()
