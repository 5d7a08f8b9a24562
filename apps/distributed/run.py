"""Running the daemon on Ray as a process: lock, cluster, writer, workers, signals, status.

`run_daemon_on_ray` locks the run directory as the single-process daemon does (one daemon per run
directory, a killed one's lock re-acquired), joins or starts the Ray runtime, starts the memory
writer on this node and N episode workers, waits for their models to load (a model that cannot load
stops the start, and status.json says why), then drives them until SIGTERM/SIGINT (or, asked to,
until nothing is left to do). On a stop it waits `daemon.stop_grace_s` for the episodes in flight,
commits those that end, and leaves the rest to the next start; then it ends the workers and the
writer (which saves its index) and, for a local runtime, Ray itself.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import threading
import time
from pathlib import Path

from insightloop.apps.daemon.lock import RunLock, pid_alive
from insightloop.apps.daemon.run import write_failed_start, write_starting_status
from insightloop.apps.daemon.status import open_log
from insightloop.apps.distributed.cluster import RaySession
from insightloop.apps.distributed.coordinator import Coordinator
from insightloop.apps.distributed.folding import FoldScheduler
from insightloop.apps.distributed.pool import RayPool
from insightloop.apps.runtime import Runtime
from insightloop.core.config import Config


def _on_stop_signals(stop: threading.Event) -> None:
    """SIGTERM/SIGINT only set the stop flag (installed after Ray's own SIGTERM handler)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())


def build_coordinator(run_dir: Path, cfg: Config, workers: int, session: RaySession, stop: threading.Event,
                      logger: logging.Logger) -> Coordinator:
    """The writer, the workers (models loaded) and the driver over them."""
    r = cfg.ray
    writer = session.spawn_writer(run_dir, cfg)
    pool = RayPool(workers, lambda name, slot: session.spawn_worker(name, cfg, writer, slot), session.kill)
    try:
        pool.ready(timeout=max(r.call_timeout_s, 600.0))
    except BaseException:
        pool.close()
        raise
    every = cfg.loop.fold_every
    folds = FoldScheduler(every, lambda: session.submit_fold(run_dir, cfg, writer), logger) if every else None
    limit = Runtime(cfg).prompt_limit  # from the model's config and tokenizer: no weights load here

    def memory_version() -> int:
        return int(session.ray.get(writer.ping.remote(), timeout=r.call_timeout_s))

    def close_writer() -> None:
        try:
            session.ray.get(writer.close.remote(), timeout=r.call_timeout_s)
        except Exception:  # a writer that died took its connection with it; SQLite's WAL has what it committed
            pass

    return Coordinator(run_dir, cfg, pool, folds=folds, stop=stop, rng=random.Random(cfg.seed),
                       memory_version=memory_version, check_writer=memory_version, logger=logger,
                       on_close=close_writer, prompt_problem=limit.problem)


def run_daemon_on_ray(run_dir: Path, cfg: Config, workers: int, address: str | None = None,
                      exit_when_idle: bool = False) -> bool:
    """Lock the run dir, start the cluster side and drive it until stopped. Raises `DaemonLocked` when
    another daemon holds the directory. Returns False: no thread is left inside an episode here."""
    run_dir = Path(run_dir).resolve()
    lock = RunLock(run_dir)
    stale = lock.acquire()  # before starting anything, so a second daemon is refused at once
    session: RaySession | None = None
    try:
        logger = open_log(run_dir, cfg.daemon.log_max_bytes, cfg.daemon.log_backups)
        logger.info("starting", extra={"data": {"pid": os.getpid(), "run_dir": str(run_dir), "workers": workers,
                                                "ray_address": address or cfg.ray.address or "local"}})
        if stale is not None:
            logger.warning("stale_lock", extra={"data": {"previous_pid": stale, "alive": pid_alive(stale)}})
        write_starting_status(run_dir, time.time(), logger)
        stop = threading.Event()
        _on_stop_signals(stop)
        try:
            session = RaySession(cfg.ray, workers, address)
            _on_stop_signals(stop)  # again: Ray installs its own SIGTERM handler when it connects
            coordinator = build_coordinator(run_dir, cfg, workers, session, stop, logger)
        except Exception as exc:  # status.json must not stay at "starting" for a daemon that is gone
            write_failed_start(run_dir, exc, logger)
            raise
        try:
            coordinator.work(exit_when_idle)
        finally:
            coordinator.close()
        return False
    finally:
        if session is not None:
            session.shutdown()
        lock.release()
