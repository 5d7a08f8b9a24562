"""The long-running improvement daemon: inbox tasks and self-practice through the learning loop.

`Daemon.run_once()` is one step of the state machine (tests drive it directly, with a fake
learner and an injected clock): it checks the budget windows and backend health, then resumes a
file in `processing/` or claims one from `inbox/`, runs one task through the learner and commits
its result; with nothing to do it practises on `cfg.daemon.practice_suites` (failure-biased, skipping
mastered problems). `serve()` runs the steps on a worker thread while the main thread handles
SIGTERM/SIGINT and writes `status.json` every `status_every_s` seconds.

Crash safety: a task counts as done only when its row in `daemon.sqlite` says so (committed before
its outbox line is appended; the outbox is rebuilt from the rows on resume). A `kill -9` loses at
most the episode in flight, which is retried on restart. A stop request is checked before every
LM call (`GuardedLM` raises `StopRequested`); an LM call that outlives the grace period is abandoned.
Spend is kept in the same database, so hourly and daily caps hold across restarts.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol, cast

from insightloop.apps.daemon.inbox import Inbox, ParsedFile, open_state_db, parse_inbox_file
from insightloop.apps.daemon.status import (
    CapUse,
    Counters,
    DaemonStatus,
    StatusBoard,
    close_log,
    log_event,
    open_log,
    read_status,
    write_status,
)
from insightloop.apps.runtime import Runtime
from insightloop.core.budget import Budget
from insightloop.core.config import Config, DaemonConfig
from insightloop.core.episode import Episode
from insightloop.core.events import Event
from insightloop.core.lm import LM, Generation, GenRequest, Reloadable
from insightloop.core.task import Task
from insightloop.rl import checkpoints
from pydantic import BaseModel
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)

LOCK_FILE = "daemon.lock"
ALL_ERRORED = "every generation of the episode errored"
STATE_DB = "daemon.sqlite"


class StopRequested(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """Raised inside an episode when a stop was requested; a BaseException so the loop's
    `except Exception` handlers (retries, analyst fallbacks) let it through."""


class DaemonLocked(RuntimeError):
    """Another daemon holds the run directory."""


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """`RUN_DIR/daemon.lock`: an exclusive `flock` plus the holder's pid.

    The kernel drops a flock when its holder dies, so a lock file left by a killed daemon is simply
    re-acquired; `acquire` returns that dead holder's pid so the recovery can be logged.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> int | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DaemonLocked(
                f"another insightloop daemon (pid {holder}) is already running on {self.path.parent} "
                f"(it holds {self.path}); stop it first (kill -TERM {holder}) or use another --run-dir"
            ) from None
        previous = os.read(fd, 64).decode(errors="replace").strip()
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        stale = int(previous) if previous.isdigit() else None
        return stale if stale is not None and stale != os.getpid() else None

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def lock_holder(run_dir: Path) -> int | None:
    """The pid recorded in the run dir's lock file if that process is alive (without locking)."""
    try:
        text = (Path(run_dir) / LOCK_FILE).read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() and pid_alive(int(text)) else None


class CallStats:
    """What the guarded LMs saw during the current episode."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.generations = 0
        self.errors = 0
        self.raised = False
        self.last_error: str | None = None

    @property
    def all_failed(self) -> bool:
        return self.raised or (self.generations > 0 and self.errors == self.generations)


def _all_errored(out: list[list[Generation]]) -> bool:
    gens = [g for row in out for g in row]
    return bool(gens) and all(g.finish_reason == "error" for g in gens)


class GuardedLM:
    """Wraps a backend: refuses to start a call once a stop is requested, retries batches whose
    generations all errored with exponential backoff (tenacity), and counts errors per episode.
    Its name and weight reloading are the wrapped backend's."""

    def __init__(self, inner: LM, stats: CallStats, stop: threading.Event, retries: int = 2,
                 backoff_s: float = 1.0, sleep: Callable[[float], None] | None = None) -> None:
        self.inner = inner
        self.stats = stats
        self.stop = stop
        self.retries = retries
        self.backoff_s = backoff_s
        self._sleep = sleep or self._interruptible_sleep

    @property
    def name(self) -> str:
        return self.inner.name

    def load_weights(self, path: str | Path) -> None:
        if not isinstance(self.inner, Reloadable):
            raise TypeError(f"{self.inner.name} cannot reload weights")
        self.inner.load_weights(path)

    def _interruptible_sleep(self, seconds: float) -> None:
        if self.stop.wait(seconds):
            raise StopRequested

    def _call(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        if self.stop.is_set():
            raise StopRequested
        try:
            out = self.inner.generate(reqs)
        except Exception as e:
            self.stats.raised, self.stats.last_error = True, f"{type(e).__name__}: {e}"
            raise
        for g in (g for row in out for g in row):
            self.stats.generations += 1
            if g.finish_reason == "error":
                self.stats.errors += 1
                self.stats.last_error = g.error or "generation error"
        return out

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        retrying = Retrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential_jitter(multiplier=self.backoff_s, max=60.0, jitter=self.backoff_s),
            retry=retry_if_result(_all_errored) | retry_if_exception_type(Exception),
            sleep=self._sleep,
            retry_error_callback=lambda state: state.outcome.result() if state.outcome else [],
        )
        return retrying(self._call, reqs)


class EpisodeRunner(Protocol):
    """What the daemon needs of the learning loop (`agent.loop.Learner` provides it)."""

    def run_episode(self, task: Task, train: bool, budget: Budget) -> Episode: ...


CAPS: dict[str, tuple[str, float, str]] = {
    "rollouts": ("hour", 3600.0, "rollouts_per_hour"),
    "tokens": ("hour", 3600.0, "tokens_per_hour"),
    "usd": ("day", 86400.0, "usd_per_day"),
    "seconds": ("day", 86400.0, "seconds_per_day"),
}


class SpendWindows:
    """Sliding-window spend (rollouts/tokens per hour, usd/seconds per day) kept in daemon.sqlite."""

    def __init__(self, con: Any, cfg: DaemonConfig) -> None:
        self.con = con
        self.cfg = cfg

    def cap(self, metric: str) -> float | None:
        return getattr(self.cfg, CAPS[metric][2])

    def _rows(self, metric: str, now: float) -> list[tuple[float, float]]:
        since = now - CAPS[metric][1]
        sql = f"SELECT ts, {metric} FROM spend WHERE ts > ? ORDER BY ts"  # metric is one of CAPS' keys
        return self.con.execute(sql, (since,)).fetchall()

    def usage(self, now: float) -> dict[str, CapUse]:
        out = {}
        for metric, (window, _, _) in CAPS.items():
            used = float(sum(v for _, v in self._rows(metric, now)))
            cap = self.cap(metric)
            out[metric] = CapUse(window=window, used=used, cap=cap,
                                 left=None if cap is None else max(0.0, cap - used))
        return out

    def blocked(self, now: float) -> tuple[str, float] | None:
        """(which cap, when it frees up) for the first cap reached, else None."""
        for metric, (window, span, _) in CAPS.items():
            cap = self.cap(metric)
            if cap is None:
                continue
            rows = self._rows(metric, now)
            used = sum(v for _, v in rows)
            if used < cap:
                continue
            for ts, v in rows:  # the cap frees once enough of the oldest spend leaves the window
                used -= v
                if used < cap:
                    return f"{metric}/{window} cap ({self.cap_text(metric)})", ts + span
        return None

    def cap_text(self, metric: str) -> str:
        cap = self.cap(metric)
        return f"{cap:g}" if cap is not None else "none"

    def episode_budget(self, now: float) -> Budget:
        """A budget holding what is left in every window (None = uncapped)."""
        use = self.usage(now)
        left = {m: u.left for m, u in use.items()}
        return Budget(
            max_rollouts=None if left["rollouts"] is None else int(left["rollouts"]),
            max_tokens=None if left["tokens"] is None else int(left["tokens"]),
            max_usd=left["usd"],
            max_seconds=left["seconds"],
        )

    def record(self, now: float, budget: Budget) -> None:
        self.con.execute("INSERT INTO spend(ts, rollouts, tokens, usd, seconds) VALUES (?,?,?,?,?)",
                         (now, budget.rollouts, budget.tokens, budget.usd, budget.seconds))

    def prune(self, now: float) -> None:
        self.con.execute("DELETE FROM spend WHERE ts < ?", (now - 2 * 86400.0,))


class Practice:
    """Self-practice problems with failure-biased sampling; mastered problems are left out."""

    def __init__(self, con: Any, tasks: list[tuple[str, Task]], rng: random.Random, streak: int) -> None:
        self.con = con
        self.tasks = tasks
        self.rng = rng
        self.streak = streak

    def pick(self) -> tuple[str, Task] | None:
        stats = {k: (a, s, st) for k, a, s, st in
                 self.con.execute("SELECT key, attempts, successes, streak FROM practice")}
        pool, weights = [], []
        for key, task in self.tasks:
            a, s, st = stats.get(key, (0, 0, 0))
            if st >= self.streak:
                continue
            pool.append((key, task))
            weights.append((a - s + 1) / (a + 2))  # posterior failure rate, Beta(1, 1) prior
        return self.rng.choices(pool, weights=weights, k=1)[0] if pool else None

    def record(self, key: str, correct: bool, now: float) -> None:
        self.con.execute(
            "INSERT INTO practice(key, attempts, successes, streak, last) VALUES (?, 1, ?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, "
            "successes = successes + excluded.successes, "
            "streak = CASE WHEN excluded.successes = 1 THEN streak + 1 ELSE 0 END, last = excluded.last",
            (key, int(correct), int(correct), now))


def load_practice(names: list[str], limit: int | None, seed: int) -> list[tuple[str, Task]]:
    """Practice problems from the configured suites, keyed `suite:task_id`."""
    from insightloop.evals.suites import load_suite

    return [(f"{name}:{t.id}", t) for name in names for t in load_suite(name, limit=limit, seed=seed)]


class Step(BaseModel):
    """What one `run_once` call did."""

    kind: Literal["task", "practice", "task_failed", "retry", "backend_failed", "abandoned",
                  "paused", "idle", "stopped"]
    detail: str = ""


class Outcome(BaseModel):
    """One episode's result as the daemon sees it."""

    episode: Episode | None = None
    error: str | None = None
    backend: bool = False
    stopped: bool = False


class Daemon:
    """The daemon's state machine; `run_once` performs one step. Thread-free: `serve` adds threads."""

    def __init__(self, run_dir: Path, cfg: Config, learner: EpisodeRunner, *, stats: CallStats | None = None,
                 stop: threading.Event | None = None, clock: Callable[[], float] = time.time,
                 rng: random.Random | None = None,
                 practice: Callable[[], list[tuple[str, Task]]] | None = None,
                 memory_version: Callable[[], int] | None = None,
                 checkpoint: Callable[[], str | None] | None = None,
                 logger: logging.Logger | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.cfg, self.dcfg = cfg, cfg.daemon
        self.learner = learner
        self.stats = stats or CallStats()
        self.stop = stop or threading.Event()
        self.clock = clock
        self.rng = rng or random.Random(cfg.seed)
        self.inbox = Inbox(self.run_dir, clock, self.dcfg.inbox_settle_s)
        self.con = open_state_db(self.run_dir / STATE_DB)
        self.windows = SpendWindows(self.con, self.dcfg)
        self.log = logger or open_log(self.run_dir, self.dcfg.log_max_bytes, self.dcfg.log_backups)
        if practice is None and self.dcfg.practice_suites:
            practice = lambda: load_practice(self.dcfg.practice_suites, self.dcfg.practice_limit, cfg.seed)  # noqa: E731
        self._practice_loader = practice
        self._practice: Practice | None = None
        self._memory_version = memory_version
        self._checkpoint = checkpoint
        self._on_close = on_close
        self._parsed: dict[str, ParsedFile] = {}
        self._fail_streak = 0
        self._backend_until = 0.0
        self._backend_error: str | None = None
        self._paused: str | None = None
        self._last_status = float("-inf")
        self.board = StatusBoard(DaemonStatus(run_dir=str(self.run_dir), started_at=clock()))

    # -- one step -----------------------------------------------------------------------------------

    def run_once(self) -> Step:
        """Do one unit of work: a paused check, or one inbox task, or one practice episode."""
        if self.stop.is_set():
            return Step(kind="stopped")
        now = self.clock()
        pause = self._pause_reason(now)
        if pause is not None:
            step = Step(kind="paused", detail=pause)
        else:
            self._note_pause(None)
            work = self._next_task()
            step = self._run_inbox_task(*work) if work is not None else self._run_practice()
        self.refresh()
        self.write_status_if_due()
        return step

    def _pause_reason(self, now: float) -> str | None:
        if self._backend_until > now:
            reason = (f"paused: backend failing: {self._backend_error}; "
                      f"retrying at {_iso(self._backend_until)}")
            until: float | None = self._backend_until
        else:
            blocked = self.windows.blocked(now)
            if blocked is None:
                return None
            reason, until = f"paused: {blocked[0]} reached, resumes at {_iso(blocked[1])}", blocked[1]
        self._note_pause(reason, until)
        return reason

    def _note_pause(self, reason: str | None, until: float | None = None) -> None:
        if reason is not None:
            self.board.update(state=reason, current_task=None, paused_until=until)
            if self._paused is None:
                self.log.warning("paused", extra={"data": {"reason": reason, "until": until}})
        elif self._paused is not None:
            self.board.update(paused_until=None)
            self.log.info("resumed", extra={"data": {"after": self._paused}})
        self._paused = reason

    # -- inbox --------------------------------------------------------------------------------------

    def _next_task(self) -> tuple[str, int, Task] | None:
        """The next unfinished inbox task, resuming processing/ first, then claiming new files."""
        while True:
            for path in self.inbox.processing():
                parsed = self._open_file(path)
                if parsed is None:
                    continue
                finished = self._finished_ids(path.name)
                for seq, task in enumerate(parsed.tasks):
                    if task.id not in finished:
                        return path.name, seq, task
                self._finish_file(path, parsed)
            if not self._claim_next():
                return None

    def _claim_next(self) -> bool:
        for path in self.inbox.waiting():
            known = {r[0] for r in self.con.execute("SELECT name FROM files")}
            dest = self.inbox.claim(path, known)
            self.con.execute("INSERT OR IGNORE INTO files(name, source, state, claimed) VALUES (?,?,?,?)",
                             (dest.name, path.name, "processing", self.clock()))
            self.log.info("claimed", extra={"data": {"file": path.name, "as": dest.name}})
            return True
        return False

    def _open_file(self, path: Path) -> ParsedFile | None:
        """Parse a processing/ file once per process; refuse bad lines or the whole file."""
        if path.name in self._parsed:
            return self._parsed[path.name]
        self.con.execute("INSERT OR IGNORE INTO files(name, source, state, claimed) VALUES (?,?,?,?)",
                         (path.name, path.name, "processing", self.clock()))
        source = self.con.execute("SELECT source FROM files WHERE name = ?", (path.name,)).fetchone()[0]
        parsed = parse_inbox_file(path, self.dcfg.max_prompt_chars, self.dcfg.max_file_bytes)
        if parsed.fatal is not None:  # recorded first: a crash before the move just repeats it
            self.con.execute("UPDATE files SET state='failed', finished=?, n_bad=?, error=? WHERE name=?",
                             (self.clock(), max(1, len(parsed.problems)), parsed.fatal, path.name))
            self.inbox.fail_file(path, parsed.fatal, parsed.problems, source)
            self.log.warning("file_failed", extra={"data": {"file": source, "reason": parsed.fatal,
                                                            "problems": len(parsed.problems)}})
            return None
        if parsed.problems:
            dest = self.inbox.reject_lines(path, parsed.problems, source)
            self.log.warning("lines_rejected", extra={"data": {"file": source, "to": dest.name,
                                                               "lines": [p.line for p in parsed.problems]}})
        self.con.execute("UPDATE files SET n_tasks=?, n_bad=? WHERE name=?",
                         (len(parsed.tasks), len(parsed.problems), path.name))
        self.inbox.rebuild_outbox(path.name, self._results(path.name, parsed))
        self._parsed[path.name] = parsed
        return parsed

    def _finished_ids(self, name: str) -> set[str]:
        rows = self.con.execute("SELECT task_id FROM tasks WHERE file=? AND state IN ('done','failed')",
                                (name,))
        return {r[0] for r in rows}

    def _results(self, name: str, parsed: ParsedFile) -> list[dict[str, Any]]:
        rows = dict(self.con.execute(
            "SELECT task_id, result FROM tasks WHERE file=? AND state IN ('done','failed')", (name,)))
        return [json.loads(rows[t.id]) for t in parsed.tasks if t.id in rows]

    def _finish_file(self, path: Path, parsed: ParsedFile) -> None:
        self.inbox.rebuild_outbox(path.name, self._results(path.name, parsed))
        self.con.execute("UPDATE files SET state='done', finished=? WHERE name=?", (self.clock(), path.name))
        self.inbox.finish_file(path)
        self._parsed.pop(path.name, None)
        self.log.info("file_done", extra={"data": {"file": path.name, "tasks": len(parsed.tasks)}})

    def _run_inbox_task(self, name: str, seq: int, task: Task) -> Step:
        label = f"{name}:{task.id}"
        self.board.update(state="working", current_task=label)
        out = self._episode(task, train=task.answer is not None)
        if out.stopped:
            self.log.info("abandoned", extra={"data": {"task": label}})
            return Step(kind="abandoned", detail=label)
        if out.backend:
            return self._backend_failure(label, out.error or self.stats.last_error or ALL_ERRORED)
        self._fail_streak = 0
        if out.error is not None:
            attempts = self._bump_attempts(name, seq, task, out.error)
            if attempts < self.dcfg.max_task_attempts:
                return Step(kind="retry", detail=f"{label}: {out.error}")
            result = {"id": task.id, "error": f"failed after {attempts} attempts: {out.error}"}
            self._commit(name, seq, task, "failed", result, None)
            return Step(kind="task_failed", detail=f"{label}: {out.error}")
        assert out.episode is not None
        result = self._result(task, out.episode)
        self._commit(name, seq, task, "done", result, result.get("reward"))
        return Step(kind="task", detail=label)

    def _result(self, task: Task, ep: Episode) -> dict[str, Any]:
        out: dict[str, Any] = {"id": task.id, "answer": ep.answer}
        if task.answer is not None:
            out["reward"] = ep.reward.score if ep.reward is not None else 0.0
            out["correct"] = ep.correct
        out.update(insights_used=list(ep.insights_used), episode_id=ep.id, rollouts=ep.rollouts,
                   tokens=ep.prompt_tokens + ep.completion_tokens)
        return out

    def _bump_attempts(self, name: str, seq: int, task: Task, error: str) -> int:
        with self._txn():
            self.con.execute(
                "INSERT INTO tasks(file, task_id, seq, state, attempts, error) VALUES (?,?,?,'pending',1,?) "
                "ON CONFLICT(file, task_id) DO UPDATE SET attempts = attempts + 1, error = excluded.error",
                (name, task.id, seq, error))
        row = self.con.execute("SELECT attempts FROM tasks WHERE file=? AND task_id=?",
                               (name, task.id)).fetchone()
        self.board.update(last_error=f"{name}:{task.id}: {error}")
        return int(row[0])

    def _commit(self, name: str, seq: int, task: Task, state: str, result: dict[str, Any],
                reward: float | None) -> None:
        """Mark the task finished (the commit is what makes it done), then append its outbox line."""
        now = self.clock()
        with self._txn():
            self.con.execute(
                "INSERT INTO tasks(file, task_id, seq, state, result, reward, finished) "
                "VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT(file, task_id) DO UPDATE SET state=excluded.state, result=excluded.result, "
                "reward=excluded.reward, finished=excluded.finished",
                (name, task.id, seq, state, json.dumps(result, ensure_ascii=False), reward, now))
            if reward is not None:
                self.con.execute("INSERT INTO scores(ts, reward, source) VALUES (?,?,?)",
                                 (now, reward, "inbox"))
        self.inbox.append_outbox(name, result)
        self.log.info(f"task_{state}", extra={"data": {"file": name, **result}})

    @contextlib.contextmanager
    def _txn(self) -> Any:
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    # -- episodes, backend health, practice ---------------------------------------------------------

    def _episode(self, task: Task, train: bool) -> Outcome:
        """Run one episode under what is left of the budget windows; record its spend."""
        budget = self.windows.episode_budget(self.clock()).start(self.clock)
        self.stats.reset()
        try:
            ep = self.learner.run_episode(task, train, budget)
            out = Outcome(episode=ep, backend=self.stats.all_failed)
        except StopRequested:
            out = Outcome(stopped=True)
        except Exception as e:  # the task is retried (or failed after max_task_attempts); the daemon goes on
            self.log.exception("episode_error", extra={"data": {"task": task.id}})
            out = Outcome(error=f"{type(e).__name__}: {e}", backend=self.stats.all_failed)
        with self._txn():
            self.windows.record(self.clock(), budget)
            self.windows.prune(self.clock())  # the ledger only needs the longest window
        return out

    def _backend_failure(self, label: str, error: str) -> Step:
        self._fail_streak += 1
        self._backend_error = error
        self.board.update(last_error=f"backend: {error}")
        if self._fail_streak >= self.dcfg.backend_fail_after:
            k = self._fail_streak - self.dcfg.backend_fail_after
            wait = min(self.dcfg.backend_pause_max_s, self.dcfg.backend_pause_s * 2 ** min(k, 20))
            self._backend_until = self.clock() + wait
        self.log.warning("backend_failure", extra={"data": {"task": label, "error": error,
                                                            "streak": self._fail_streak}})
        return Step(kind="backend_failed", detail=error)

    def _practice_pool(self) -> Practice | None:
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
        if item is None:
            self.board.update(state="idle", current_task=None)
            return Step(kind="idle")
        key, task = item
        self.board.update(state="practising", current_task=f"practice {key}")
        out = self._episode(task, train=True)
        if out.stopped:
            return Step(kind="abandoned", detail=key)
        if out.backend:
            return self._backend_failure(key, out.error or self.stats.last_error or ALL_ERRORED)
        self._fail_streak = 0
        ep = out.episode
        score = 0.0 if ep is None or ep.reward is None else ep.reward.score
        with self._txn():
            assert pool is not None
            pool.record(key, ep is not None and ep.correct, self.clock())
            if out.error is None:
                self.con.execute("INSERT INTO scores(ts, reward, source) VALUES (?,?,?)",
                                 (self.clock(), score, "practice"))
        if out.error is not None:
            self.board.update(last_error=f"practice {key}: {out.error}")
            return Step(kind="task_failed", detail=f"practice {key}: {out.error}")
        return Step(kind="practice", detail=key)

    # -- status -------------------------------------------------------------------------------------

    def counters(self) -> Counters:
        q = self.con.execute
        done, failed = q("SELECT COALESCE(SUM(state='done'),0), COALESCE(SUM(state='failed'),0) "
                         "FROM tasks").fetchone()
        bad, fdone, ffail = q("SELECT COALESCE(SUM(n_bad),0), COALESCE(SUM(state='done'),0), "
                              "COALESCE(SUM(state='failed'),0) FROM files").fetchone()
        practice = q("SELECT COALESCE(SUM(attempts),0) FROM practice").fetchone()[0]
        pending = sum(len(p.tasks) - len(self._finished_ids(n)) for n, p in self._parsed.items())
        for path in self.inbox.waiting():
            with contextlib.suppress(OSError):  # claimed or removed meanwhile: nothing pending there
                pending += sum(1 for line in path.read_bytes().splitlines() if line.strip())
        return Counters(done=done, failed=failed + bad, pending=pending, practice=practice,
                        files_done=fdone, files_failed=ffail)

    def refresh(self) -> None:
        """Recompute the status fields (counters, budget, memory version, accuracy)."""
        rows = self.con.execute("SELECT reward FROM scores ORDER BY rowid DESC LIMIT ?",
                                (self.dcfg.accuracy_window,)).fetchall()
        self.board.update(
            counters=self.counters(),
            budget=self.windows.usage(self.clock()),
            memory_version=self._memory_version() if self._memory_version else None,
            checkpoint=self._checkpoint() if self._checkpoint else None,
            accuracy=sum(r[0] for r in rows) / len(rows) if rows else None,
            accuracy_n=len(rows),
        )

    def write_status(self) -> DaemonStatus:
        now = self.clock()
        snap = self.board.snapshot(now)
        write_status(self.run_dir, snap)
        self._last_status = now
        return snap

    def write_status_if_due(self) -> None:
        if self.clock() - self._last_status >= self.dcfg.status_every_s:
            self.write_status()

    def on_event(self, event: Event) -> None:
        """The learning loop's event sink: events go to the JSON-lines log."""
        log_event(self.log, event)

    # -- the long-running loop ----------------------------------------------------------------------

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
                self.log.exception("step_error")
                err = f"{type(e).__name__}: {e}"
                self.board.update(state=f"error: {err}", last_error=err)
                self.stop.wait(min(60.0, self.dcfg.poll_seconds * 2 ** min(faults, 6)))
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
            self.refresh()
        self.board.update(state=state, current_task=None)
        self.write_status()
        self.log.info("stopped", extra={"data": {"abandoned": abandoned}})
        close_log(self.log)
        if not abandoned:
            self.con.close()
            if self._on_close is not None:
                self._on_close()


def _on_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT only set the stop flag; the worker stops at its next safe point."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def serve(daemon: Daemon, exit_when_idle: bool = False) -> bool:
    """Run `daemon` until SIGTERM/SIGINT (or idle, if asked): steps on a worker thread, status
    from this one. Returns True when the episode in flight had to be abandoned (the worker was
    still inside an LM call after the grace period); the caller should then exit the process."""
    _on_stop_signals(daemon.stop)
    worker = threading.Thread(target=daemon.work, args=(exit_when_idle,), name="insightloop-daemon",
                              daemon=True)
    worker.start()
    while worker.is_alive() and not daemon.stop.wait(0.2):
        daemon.write_status_if_due()
    daemon.log.info("stopping", extra={"data": {"signal": daemon.stop.is_set()}})
    daemon.stop.set()
    worker.join(daemon.dcfg.stop_grace_s)
    abandoned = worker.is_alive()
    daemon.close(abandoned)
    return abandoned


class CheckpointSync:
    """Keeps the live policy on RUN_DIR's current checkpoint: loads it at start, and again whenever
    a fold (which may run inside the loop with no handle on this backend) moves CURRENT. Called
    after every step; returns the checkpoint's name for the status (None = base weights)."""

    def __init__(self, run_dir: Path, policy: GuardedLM) -> None:
        self.run_dir = run_dir
        self.policy = policy
        self.loaded: Path | None = None

    def __call__(self) -> str | None:
        folder = checkpoints.current(self.run_dir)
        if folder is not None and folder != self.loaded and isinstance(self.policy.inner, Reloadable):
            self.policy.load_weights(folder)
            self.loaded = folder
        return folder.name if folder is not None else None


def build_daemon(run_dir: Path, cfg: Config, stop: threading.Event, logger: logging.Logger) -> Daemon:
    """The real daemon: guarded backends (on the current checkpoint's weights), memory, learner."""
    stats = CallStats()
    rng = random.Random(cfg.seed)

    def guard(lm: LM) -> GuardedLM:
        return GuardedLM(lm, stats, stop, cfg.daemon.lm_retries, cfg.daemon.lm_backoff_s)

    rt = Runtime(cfg, run_dir, wrap_lm=guard)
    sync = CheckpointSync(run_dir, cast(GuardedLM, rt.policy))
    sync()
    store = rt.memory()
    learner = rt.learner(store, rng=rng, on_event=lambda event: log_event(logger, event))
    return Daemon(run_dir, cfg, learner, stats=stats, stop=stop, rng=rng,
                  memory_version=lambda: store.version, checkpoint=sync, logger=logger,
                  on_close=rt.close)


def run_daemon(run_dir: Path, cfg: Config, exit_when_idle: bool = False) -> bool:
    """Lock the run dir, build the daemon and serve until stopped. Raises `DaemonLocked` when
    another daemon holds the directory. Returns `serve`'s abandoned flag."""
    run_dir = Path(run_dir).resolve()
    lock = RunLock(run_dir)
    stale = lock.acquire()  # before loading any model, so a second daemon is refused at once
    try:
        logger = open_log(run_dir, cfg.daemon.log_max_bytes, cfg.daemon.log_backups)
        logger.info("starting", extra={"data": {"pid": os.getpid(), "run_dir": str(run_dir)}})
        if stale is not None:
            logger.warning("stale_lock", extra={"data": {"previous_pid": stale, "alive": pid_alive(stale)}})
        last = read_status(run_dir) or DaemonStatus()  # keep the last known counters while loading
        now = time.time()
        write_status(run_dir, last.model_copy(update={
            "state": "starting: loading models", "pid": os.getpid(), "run_dir": str(run_dir),
            "current_task": None, "paused_until": None, "started_at": now, "updated_at": now}))
        stop = threading.Event()
        _on_stop_signals(stop)  # already while the models load: a stop then exits right after
        daemon = build_daemon(run_dir, cfg, stop, logger)
        return serve(daemon, exit_when_idle)
    finally:
        lock.release()
