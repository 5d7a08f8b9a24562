"""The daemon's guard around each LM backend: stop requests, retries with backoff, error counts.

A stop request is checked before every LM call (`GuardedLM` raises `StopRequested`), so SIGTERM
ends an episode at its next call rather than after it. A batch whose generations all errored is
retried with exponential backoff; what the calls saw is counted in `CallStats`, which the daemon
reads after each episode to tell a failing backend from a failing task.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from insightloop.core.lm import LM, Generation, GenRequest, Reloadable, Scorer, ScoreRequest, Scores
from tenacity import (
    Retrying,
    retry_if_exception_type,
    retry_if_result,
    stop_after_attempt,
    wait_exponential_jitter,
)


class StopRequested(BaseException):  # noqa: N818 - a control-flow signal, like KeyboardInterrupt
    """Raised inside an episode when a stop was requested; a BaseException so the loop's
    `except Exception` handlers (retries, analyst fallbacks) let it through."""


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


class GuardedScorer(GuardedLM):
    """A guarded backend that can also score answer options (`core.lm.Scorer`): scoring passes
    refuse to start after a stop request and count as calls, like generations."""

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
        if self.stop.is_set():
            raise StopRequested
        try:
            return self.inner.score(reqs)  # type: ignore[attr-defined]
        except Exception as e:
            self.stats.raised, self.stats.last_error = True, f"{type(e).__name__}: {e}"
            raise


def guard(inner: LM, stats: CallStats, stop: threading.Event, retries: int = 2,
          backoff_s: float = 1.0) -> GuardedLM:
    """The guard for a backend, keeping its ability to score answers (choice by likelihood and the
    paired admission test need it); generation goes through the guard's retries either way."""
    cls = GuardedScorer if isinstance(inner, Scorer) else GuardedLM
    return cls(inner, stats, stop, retries, backoff_s)
