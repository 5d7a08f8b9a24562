"""The distributed daemon's driver: the single-process daemon's bookkeeping, with N workers.

`Coordinator` is a `Daemon` (`apps.daemon.service`) whose episodes run elsewhere. It keeps the
same state in the same files — daemon.sqlite (ledger, spend windows, scores, practice), the inbox
folders and outbox, status.json and the log — and settles a worker's reply exactly as the daemon
settles its own episode: same pauses, same retries, same commit. Each step collects the calls that
ended, hands the next unfinished tasks (inbox first, then practice) to idle workers, and refreshes
the status. A task is done when its row in daemon.sqlite says so, committed before its outbox line;
only a reply commits it, and a task is never handed out while it runs or once it is done, so every
task is answered exactly once. A `kill -9` of the driver loses only the episodes in flight, which
the next start runs again.

Faults:
- a worker dies under a task (`kill -9`, an out-of-memory kill, a lost node): a fresh worker takes
  its slot, and the task goes back to the queue, to another worker when one is idle; a task that
  `max_task_attempts` workers died on is failed;
- a worker keeps failing (`ray.worker_fail_after` failed episodes in a row): it is replaced;
- the memory writer is gone: the driver stops without settling anything more (a restart resumes);
- status.json's `workers` lists each worker, what it runs, its failures and replacements, and why.
Each running episode gets an equal share of what is left in the spend windows, so together they
stay within the caps (to rounding).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insightloop.apps.daemon.episodes import Outcome
from insightloop.apps.daemon.ledger import TaskRef, result_row
from insightloop.apps.daemon.service import Daemon, Step
from insightloop.apps.daemon.state import transaction
from insightloop.apps.daemon.status import log_event
from insightloop.apps.distributed.folding import FoldScheduler
from insightloop.apps.distributed.jobs import Job, current_name, make_order, trains
from insightloop.apps.distributed.pool import Finished, Pool
from insightloop.apps.distributed.roster import Roster
from insightloop.apps.distributed.worker import EpisodeOrder, EpisodeReply
from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.core.episode import Episode
from insightloop.core.task import Task


class WriterLost(RuntimeError):
    """The memory writer is gone: no episode can be settled against it; a restart resumes the run."""


class _Remote:
    """The daemon's learner slot: episodes run on the workers, never here."""

    def run_episode(self, task: Task, train: bool, budget: Budget) -> Episode:
        raise RuntimeError("the distributed daemon runs episodes on its workers")


class Coordinator(Daemon):
    """The driver of a daemon whose episodes run on a pool of workers (see the module docstring)."""

    def __init__(self, run_dir: Path, cfg: Config, pool: Pool, *, folds: FoldScheduler | None = None,
                 check_writer: Callable[[], object] | None = None, **daemon: Any) -> None:
        daemon.setdefault("checkpoint", lambda: current_name(Path(run_dir)))
        super().__init__(run_dir, cfg, _Remote(), **daemon)
        self.pool = pool
        self.folds = folds
        self.check_writer = check_writer
        self.writer_lost: str | None = None
        self.jobs: dict[int, Job] = {}
        self.crashes: dict[str, int] = {}  # task key -> workers that died running it
        self.tried: dict[str, set[int]] = {}  # task key -> slots it failed or died on
        self.workers = Roster([pool.name(slot) for slot in range(pool.size)], cfg.ray.worker_fail_after)

    # -- one step -----------------------------------------------------------------------------------
    def run_once(self, wait_s: float = 0.0) -> Step:
        """Settle the calls that ended (waiting up to `wait_s` for one), then hand out work."""
        if self.stop.is_set():
            return Step(kind="stopped")
        finished = self.pool.wait(wait_s if self.jobs else 0.0)
        self._writer_alive()  # before settling: failures caused by a dead writer must not count against tasks
        for call in finished:
            self._settle(call)
        if self.folds is not None:
            self.folds.poll()
        handed = 0
        pause = self._pause_reason(self.clock())
        if pause is None:
            self._note_pause(None)
            handed = self._dispatch()
        self._show(pause)
        self.reporter.refresh()
        self.reporter.write_if_due()
        if pause is not None:
            return Step(kind="paused", detail=pause)
        return Step(kind="task", detail=f"{len(self.jobs)} running") if self.jobs or handed else Step(kind="idle")

    def _dispatch(self) -> int:
        """Give every idle worker the next job; returns how many were handed out."""
        idle = self.pool.idle()
        handed = 0
        while idle:
            job = self._next_job(idle)
            if job is None:
                break
            idle.remove(job.slot)
            self.pool.submit(job.slot, job.order.key, "run", job.order)
            self.jobs[job.slot] = job
            self.workers.started(job.slot, job.label)
            handed += 1
        return handed

    def _next_job(self, idle: list[int]) -> Job | None:
        """The next inbox task not running anywhere, on an idle slot it has not failed or died on
        (a task that did waits for another worker), else a practice problem."""
        busy = {(j.ref.file, j.ref.task.id) for j in self.jobs.values() if j.ref is not None}
        while (ref := self.ledger.next_task(busy)) is not None:
            slot = self._slot_for(ref.label, idle)
            if slot is not None:  # answered as the single-process daemon answers it, then learned from
                order = self._order(ref.label, ref.task, respond=True, learn=self.dcfg.learn)
                return Job(slot=slot, ref=ref, order=order)
            busy.add((ref.file, ref.task.id))  # held back for now, not finished: its file stays open
        pool = self._practice_pool()
        item = pool.pick() if pool is not None else None
        if item is None:
            return None
        key, task = item
        return Job(slot=idle[0], practice=key, order=self._order(f"practice {key}", task, train=True))

    def _slot_for(self, key: str, idle: list[int]) -> int | None:
        """An idle slot the task has not failed or died on; None while such a slot is busy; any idle
        slot once it failed on every one."""
        tried = self.tried.get(key, set())
        fresh = [s for s in idle if s not in tried]
        if fresh:
            return fresh[0]
        return idle[0] if len(tried) >= self.pool.size else None

    def _order(self, key: str, task: Task, **how: bool) -> EpisodeOrder:
        left = self.windows.episode_budget(self.clock())
        return make_order(key, task, left, self.pool.size, self.run_dir, **how)

    def _writer_alive(self) -> None:
        if self.check_writer is None:
            return
        try:
            self.check_writer()
        except Exception as e:  # Ray's errors for a dead actor or a call that timed out
            self.writer_lost = f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
            raise WriterLost(f"the memory writer is gone ({self.writer_lost}); restart the daemon: it resumes "
                             "the run, and the episodes in flight run again") from e

    # -- settling a call ----------------------------------------------------------------------------
    def _settle(self, finished: Finished) -> None:
        job = self.jobs.get(finished.slot)
        if job is None or job.order.key != finished.key:
            return  # a call of a worker replaced meanwhile
        del self.jobs[finished.slot]
        if finished.crash is not None:
            self._crashed(job, finished.crash)
            return
        reply: EpisodeReply = finished.value
        self.workers.answered(finished.slot)
        self.log.info("episode_done", extra={"data": {"task": job.label, "worker": reply.worker,
                                                      "seconds": round(reply.seconds, 3), "writes": reply.writes,
                                                      "exchanges": reply.exchanges, "served": reply.served}})
        self._record_spend(reply)
        for event in reply.events:
            log_event(self.log, event)
        self._outcome(job, reply)

    def _record_spend(self, reply: EpisodeReply) -> None:
        with transaction(self.con):
            self.windows.record(self.clock(), reply.spend)
            self.windows.prune(self.clock())

    def _outcome(self, job: Job, reply: EpisodeReply) -> None:
        """As the single-process daemon settles an episode (`Daemon._run_inbox_task` and practice)."""
        out = reply.outcome
        if out.stopped:
            self.log.info("abandoned", extra={"data": {"task": job.label, "worker": reply.worker}})
            return
        if out.backend_error is not None:  # not the task's fault: it is not charged an attempt
            self._backend_failure(job.label, out.backend_error)
            if self.cfg.policy.backend != "litellm":  # its own model failing (a shared server is not its fault)
                self._worker_failed(job.slot, out.backend_error)
            return
        self.health.ok()
        if out.error is not None:
            self.log.warning("episode_error", extra={"data": {"task": job.label, "worker": reply.worker,
                                                              "error": out.error, "trace": reply.trace}})
            self.tried.setdefault(job.order.key, set()).add(job.slot)
            self._worker_failed(job.slot, out.error)
        else:
            self.workers.succeeded(job.slot)
        if job.ref is not None:
            self._inbox_outcome(job.ref, out)
        else:
            self._practice_outcome(job, out)
        if out.error is None and trains(job.order) and self.folds is not None:
            self.folds.trained()

    def _inbox_outcome(self, ref: TaskRef, out: Outcome) -> None:
        if ref.task.id in self.ledger.finished_ids(ref.file):  # committed already: never answered twice
            self.log.warning("duplicate_result", extra={"data": {"task": ref.label}})
            return
        if out.error is not None:
            self._task_error(ref, out.error)
            return
        assert out.episode is not None
        result = result_row(ref.task, out.episode)
        self.ledger.commit(ref, "done", result, result.get("reward"))

    def _practice_outcome(self, job: Job, out: Outcome) -> None:
        pool = self._practice_pool()
        if pool is not None and job.practice is not None:
            self._record_practice(pool, job.practice, out)
        if out.error is not None:
            self.board.update(last_error=f"{job.label}: {out.error}")

    # -- faults -------------------------------------------------------------------------------------
    def _crashed(self, job: Job, crash: str) -> None:
        """The worker died under the job: replace it; the task runs again, or fails after too many deaths."""
        slot, key = job.slot, job.order.key
        self.log.warning("worker_died", extra={"data": {"worker": self.pool.name(slot), "task": job.label,
                                                        "error": crash}})
        self._replace(slot, f"died running {job.label}: {crash}")
        self.tried.setdefault(key, set()).add(slot)
        deaths = self.crashes[key] = self.crashes.get(key, 0) + 1
        if job.ref is not None and deaths >= self.dcfg.max_task_attempts:
            error = f"failed: the worker running it died {deaths} times; last: {crash}"
            self.ledger.commit(job.ref, "failed", {"id": job.ref.task.id, "error": error}, None)

    def _worker_failed(self, slot: int, error: str) -> None:
        if self.workers.failed(slot):
            failures = self.workers[slot].failures
            self._replace(slot, f"replaced after {failures} failed episodes in a row; last: {error}")

    def _replace(self, slot: int, why: str) -> None:
        old = self.pool.name(slot)
        self.pool.replace(slot)
        new = self.pool.name(slot)
        self.workers.replaced(slot, new, why)
        self.log.warning("worker_replaced", extra={"data": {"worker": old, "by": new, "reason": why}})
        self.board.update(last_error=f"worker {old} replaced by {new}: {why}")

    # -- status ---------------------------------------------------------------------------------------
    def _show(self, pause: str | None) -> None:
        """Workers and the overall state on the status board."""
        for slot in range(self.pool.size):
            self.workers.seen(slot, self.pool.info(slot), slot in self.jobs)
        labels = [job.label for job in self.jobs.values()]
        fields: dict[str, Any] = {"workers": self.workers.snapshot(), "current_task": ", ".join(labels) or None}
        if pause is None:
            busy = len(self.jobs)
            fields["state"] = f"working: {busy} of {self.pool.size} workers busy" if busy else "idle"
        self.board.update(**fields)

    # -- the long-running loop ----------------------------------------------------------------------
    def work(self, exit_when_idle: bool = False) -> None:
        """Steps until a stop is requested (or, with `exit_when_idle`, until nothing is left to do)."""
        faults = 0
        while not self.stop.is_set():
            try:
                step = self.run_once(self.dcfg.poll_seconds)
                faults = 0
            except WriterLost as e:  # nothing can be committed against the memory any more: stop
                self.log.error("writer_lost", extra={"data": {"error": str(e)}})
                self.board.update(last_error=str(e))
                raise
            except Exception as e:  # a fault outside any episode (disk full, ...): report, back off, go on
                faults += 1
                self._back_off(e, faults)
                continue
            if step.kind == "idle" and exit_when_idle and not self._folding():
                break
            if step.kind == "idle" or (step.kind == "paused" and not self.jobs):
                self.stop.wait(self.dcfg.poll_seconds)

    def _folding(self) -> bool:
        if self.folds is None or self.folds.running is None:
            return False
        self.folds.wait(self.dcfg.poll_seconds)
        return self.folds.running is not None

    def drain(self, grace_s: float) -> list[str]:
        """After a stop: settle the episodes that end within `grace_s`; the rest are abandoned (they
        are not committed, so the next start runs them again). Returns the abandoned labels."""
        end = time.monotonic() + grace_s
        while self.jobs and self.writer_lost is None and time.monotonic() < end:
            for finished in self.pool.wait(max(0.0, min(0.2, end - time.monotonic()))):
                self._settle(finished)
        left = [job.label for job in self.jobs.values()]
        for label in left:
            self.log.info("abandoned", extra={"data": {"task": label}})
        self.jobs.clear()
        return left

    def close(self, abandoned: bool = False) -> None:
        """Settle what ends within the grace period, end the workers, write the final status."""
        left = self.drain(self.dcfg.stop_grace_s)
        self.pool.close()
        self.workers.stopped()
        self.board.update(workers=self.workers.snapshot())
        super().close(abandoned)
        notes = [f"the memory writer is gone ({self.writer_lost})"] if self.writer_lost else []
        notes += [f"{len(left)} episode(s) in flight left for the next start"] if left else []
        if notes:  # after the final write: say why, and what the next start runs again
            self.board.update(state="stopped: " + "; ".join(notes))
            self.reporter.write()
