"""Running the real daemon as a process: lock, models, signals, a worker thread and status writes.

`run_daemon` locks the run dir (before loading any model, so a second daemon is refused at once),
marks status.json as starting, builds the daemon on the runtime factory's guarded backends (the
memory opened first, so a damaged one is refused before the models load; a start that fails leaves
status.json saying why) and serves until SIGTERM/SIGINT. `serve` runs the steps on a worker thread
while the main thread writes status.json every `status_every_s`; on a stop it waits `stop_grace_s`
for the worker to reach a safe point, and otherwise abandons the episode in flight (an LM call
cannot be interrupted), which is retried on the next start.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

from insightloop.apps.daemon.guard import CallStats, GuardedLM, guard
from insightloop.apps.daemon.lock import RunLock, pid_alive
from insightloop.apps.daemon.service import Daemon
from insightloop.apps.daemon.status import (
    DaemonStatus,
    UnreadableStatus,
    log_event,
    open_log,
    read_status,
    write_status,
)
from insightloop.apps.runtime import Runtime
from insightloop.core.config import Config
from insightloop.core.errors import UserError
from insightloop.core.events import Event
from insightloop.core.lm import LM, Reloadable
from insightloop.rl import checkpoints


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
        daemon.reporter.write_if_due()
    daemon.log.info("stopping", extra={"data": {"signal": daemon.stop.is_set()}})
    daemon.stop.set()
    worker.join(daemon.dcfg.stop_grace_s)
    abandoned = worker.is_alive()
    daemon.close(abandoned)
    return abandoned


class CheckpointSync:
    """Keeps the live policy on RUN_DIR's current checkpoint: loads it at start, and again whenever
    a fold moves CURRENT. A fold run by the learner on this very backend has already swapped the
    weights in (its gate's hand-off), so a backend that reports serving that folder is not reloaded;
    a fold elsewhere (another process, a Ray task) is picked up here. Called after every step;
    returns the checkpoint's name for the status (None = base weights)."""

    def __init__(self, run_dir: Path, policy: GuardedLM) -> None:
        self.run_dir = run_dir
        self.policy = policy
        self.loaded: Path | None = None

    def __call__(self) -> str | None:
        folder = checkpoints.current(self.run_dir)
        if folder is not None and folder != self.loaded and isinstance(self.policy.inner, Reloadable):
            if getattr(self.policy.inner, "model_path", None) != str(folder):
                self.policy.load_weights(folder)
            self.loaded = folder
        return folder.name if folder is not None else None


def build_daemon(run_dir: Path, cfg: Config, stop: threading.Event, logger: logging.Logger) -> Daemon:
    """The real daemon: guarded backends (on the current checkpoint's weights), memory, learner."""
    stats = CallStats()
    rng = random.Random(cfg.seed)

    def wrap(lm: LM) -> GuardedLM:
        return guard(lm, stats, stop, cfg.daemon.lm_retries, cfg.daemon.lm_backoff_s)

    rt = Runtime(cfg, run_dir, wrap_lm=wrap)
    store = rt.memory()  # before the models: a damaged memory is refused at once
    sync = CheckpointSync(run_dir, cast(GuardedLM, rt.policy))
    sync()
    sinks: list[Callable[[Event], None]] = [lambda event: log_event(logger, event)]
    # With `loop.fold_every` the learner folds through the runtime's hook on this same backend.
    learner = rt.learner(store, rng=rng, on_event=lambda event: sinks[-1](event))
    daemon = Daemon(run_dir, cfg, learner, stats=stats, stop=stop, rng=rng,
                    memory_version=lambda: store.version, checkpoint=sync, logger=logger,
                    on_close=rt.close, prompt_problem=rt.prompt_limit.problem)
    sinks.append(daemon.on_event)  # from now on events also reach the status board
    return daemon


def write_starting_status(run_dir: Path, now: float, logger: logging.Logger) -> DaemonStatus:
    """Mark status.json as starting while the models load, keeping the last known counters; an
    unreadable status.json is replaced by a fresh one."""
    last = read_status(run_dir)
    if isinstance(last, UnreadableStatus):
        logger.warning("status_unreadable", extra={"data": {"reason": last.reason}})
    base = last if last is not None and not isinstance(last, UnreadableStatus) else DaemonStatus()
    status = base.model_copy(update={
        "state": "starting: loading models", "pid": os.getpid(), "run_dir": str(run_dir),
        "current_task": None, "paused_until": None, "started_at": now, "updated_at": now})
    write_status(run_dir, status)
    return status


def write_failed_start(run_dir: Path, error: Exception, logger: logging.Logger) -> None:
    """Replace the "starting" status by a stopped one saying why the daemon could not start."""
    reason = " ".join(str(error).split()) or type(error).__name__
    if not isinstance(error, UserError):
        reason = f"{type(error).__name__}: {reason}"
    logger.error("start_failed", extra={"data": {"error": reason}})
    last = read_status(run_dir)
    base = last if last is not None and not isinstance(last, UnreadableStatus) else DaemonStatus()
    now = time.time()
    write_status(run_dir, base.model_copy(update={
        "state": f"stopped: could not start: {reason}", "last_error": reason, "current_task": None,
        "updated_at": now}))


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
        write_starting_status(run_dir, time.time(), logger)
        stop = threading.Event()
        _on_stop_signals(stop)  # already while the models load: a stop then exits right after
        try:
            daemon = build_daemon(run_dir, cfg, stop, logger)
        except Exception as exc:  # status.json must not stay at "starting" for a daemon that is gone
            write_failed_start(run_dir, exc, logger)
            raise
        return serve(daemon, exit_when_idle)
    finally:
        lock.release()
