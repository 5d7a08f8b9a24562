"""Folding on Ray: every `loop.fold_every` training episodes of all workers, one fold runs as a Ray
task, on a GPU when the cluster has one (TRL trains there through accelerate), on a CPU otherwise.

The fold is the single-process one (`rl.fold.fold`): it reads the run's episodes and chains from the
run directory, trains from the current checkpoint, and its gate measures old against new weights on
held-out tasks; only an accepted fold moves the run's CURRENT. The driver names CURRENT in every
later order, so each worker loads the new weights before its next episode: the gate is still what
decides what the workers serve. The post-fold insight re-test, when configured, marks insights
absorbed through the memory writer, so the memory keeps one writer.

`FoldScheduler` is the driver's side: it counts training episodes and starts a fold when they are
due and none is running; `submit` returns a `concurrent.futures.Future` (a Ray `ObjectRef.future()`
in a run, a plain one in tests).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from insightloop.apps.distributed.proxy import Transport, WriterInsights
from insightloop.core.config import Config
from insightloop.rl.fold import fold
from pydantic import BaseModel


class FoldSummary(BaseModel):
    """What a fold did, as the driver logs it."""

    ok: bool
    accepted: bool = False
    checkpoint: str | None = None
    method: str | None = None
    gate_old: float | None = None
    gate_new: float | None = None
    seconds: float = 0.0
    error: str | None = None


def fold_job(run_dir: str, cfg: Config, transport: Transport | None = None) -> FoldSummary:
    """One fold of the run (the body of the Ray task). Too little data is an answer, not a failure."""
    store = WriterInsights(transport) if transport is not None else None
    try:
        result = fold(Path(run_dir), cfg, store=store)
    except ValueError as e:  # no episodes or validation tasks yet: reported, and the run goes on
        return FoldSummary(ok=False, error=str(e))
    return FoldSummary(ok=True, accepted=result.accepted, checkpoint=result.checkpoint, method=result.method,
                       gate_old=result.gate.old_accuracy, gate_new=result.gate.new_accuracy,
                       seconds=result.seconds)


class FoldScheduler:
    """Starts a fold every `every` training episodes, one at a time, and logs how each ended."""

    def __init__(self, every: int, submit: Callable[[], Future], log: logging.Logger) -> None:
        self.every = every
        self.submit = submit
        self.log = log
        self.since = 0
        self.running: Future | None = None
        self.folds = 0
        self.last: FoldSummary | None = None

    def trained(self, episodes: int = 1) -> None:
        """Count finished training episodes; start a fold once enough are in and none runs."""
        self.since += episodes
        if self.running is None and self.since >= self.every:
            self.since = 0
            self.log.info("fold_started", extra={"data": {"folds": self.folds}})
            self.running = self.submit()

    def poll(self) -> FoldSummary | None:
        """The summary of a fold that has just ended (once), else None."""
        if self.running is None or not self.running.done():
            return None
        future, self.running = self.running, None
        try:
            summary = future.result()
        except Exception as e:  # the fold task raised or its worker died: logged; the next one may work
            summary = FoldSummary(ok=False, error=f"{type(e).__name__}: {' '.join(str(e).split())[:500]}")
        self.folds += 1
        self.last = summary
        self.log.info("fold_finished", extra={"data": summary.model_dump()})
        return summary

    def wait(self, timeout: float | None = None) -> FoldSummary | None:
        """Wait for a running fold (exit when idle); None when none runs or it is not done in time."""
        if self.running is None:
            return None
        try:
            self.running.result(timeout=timeout)
        except Exception:  # reported by `poll`
            pass
        return self.poll()
