"""`Budget`: the rollouts, tokens, dollars and seconds an episode or run may spend.

Every LM call is charged to a budget. `charge` records spend; `exhausted` says whether any cap is
reached; `allows(rollouts=k)` tells whether k more rollouts fit, so callers stop *before* going past.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from insightloop.core.lm import Generation, Scores
from pydantic import BaseModel, Field, PrivateAttr


class Budget(BaseModel):
    """Caps (None = unlimited) and spend so far."""

    max_rollouts: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0)
    max_usd: float | None = Field(None, ge=0)
    max_seconds: float | None = Field(None, ge=0)
    rollouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0
    _clock: Callable[[], float] = PrivateAttr(default=time.monotonic)
    _started: float | None = PrivateAttr(default=None)

    def start(self, clock: Callable[[], float] | None = None) -> Budget:
        """Start the wall clock (idempotent). A clock can be injected for tests."""
        if clock is not None:
            self._clock = clock
        if self._started is None:
            self._started = self._clock() - self.seconds
        return self

    def _tick(self) -> None:
        if self._started is not None:
            self.seconds = self._clock() - self._started

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def charge(self, gens: list[Generation], rollouts: int = 0) -> None:
        """Charge generations' tokens and cost, plus `rollouts` verified completions."""
        for g in gens:
            self.prompt_tokens += g.prompt_tokens
            self.completion_tokens += g.completion_tokens
            self.usd += g.cost_usd
        self.rollouts += rollouts
        self._tick()

    def charge_scores(self, scores: list[Scores], prompts: bool = False) -> None:
        """Charge scoring passes: the scored continuation tokens, and the prompts' tokens when they
        were not already paid for (an answer choice scores a prompt just generated: cached)."""
        for s in scores:
            self.completion_tokens += sum(s.tokens)
            if prompts:
                self.prompt_tokens += s.prompt_tokens * len(s.tokens)
        self._tick()

    def allows(self, rollouts: int = 1) -> bool:
        """Whether `rollouts` more rollouts fit under every cap."""
        self._tick()
        if self.max_rollouts is not None and self.rollouts + rollouts > self.max_rollouts:
            return False
        return not self.exhausted()

    def remaining_rollouts(self) -> int | None:
        return None if self.max_rollouts is None else max(0, self.max_rollouts - self.rollouts)

    def exhausted(self) -> bool:
        """Whether any cap is reached."""
        self._tick()
        return any(
            cap is not None and used >= cap
            for cap, used in (
                (self.max_rollouts, self.rollouts),
                (self.max_tokens, self.tokens),
                (self.max_usd, self.usd),
                (self.max_seconds, self.seconds),
            )
        )

    def child(self, max_rollouts: int | None = None) -> Budget:
        """A sub-budget whose caps never exceed what is left here; merge it back with `absorb`."""
        left = self.remaining_rollouts()
        cap = left if max_rollouts is None else (max_rollouts if left is None else min(left, max_rollouts))
        tok_left = None if self.max_tokens is None else max(0, self.max_tokens - self.tokens)
        usd_left = None if self.max_usd is None else max(0.0, self.max_usd - self.usd)
        return Budget(max_rollouts=cap, max_tokens=tok_left, max_usd=usd_left).start(self._clock)

    def absorb(self, other: Budget) -> None:
        """Add another budget's spend to this one."""
        self.rollouts += other.rollouts
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.usd += other.usd
        self._tick()
