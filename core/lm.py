"""The `LM` protocol every backend implements, and the request/response records it speaks.

A backend takes a batch of `GenRequest`s and returns one `list[Generation]` per request (one
`Generation` per sample, `n` of them). Backends apply the chat template themselves: callers pass
chat `messages`, and optionally an `assistant_prefix` that the model continues (the reasoning path
so far in a search tree). Token counts are the backend's own tokenizer counts, so budgets are exact.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Hashable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

FinishReason = Literal["stop", "length", "error"]


class Message(BaseModel):
    """One chat message."""

    model_config = ConfigDict(frozen=True)
    role: Literal["system", "user", "assistant"]
    content: str


class GenRequest(BaseModel):
    """A generation request: chat messages, plus an optional assistant text the model continues."""

    model_config = ConfigDict(frozen=True)
    messages: tuple[Message, ...]
    assistant_prefix: str = ""
    n: int = Field(1, ge=1)
    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.7, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stop: tuple[str, ...] = ()
    stop_pattern: str | None = Field(
        None, description="a regex: generation ends at the end of its first match in the output, which is "
        "kept (e.g. the end of an answer line); backends that cannot stop on it cut the text afterwards")
    seed: int | None = None

    @classmethod
    def chat(cls, user: str, system: str | None = None, **kw: object) -> GenRequest:
        """Shorthand for a one-turn request."""
        msgs = ([Message(role="system", content=system)] if system else []) + [
            Message(role="user", content=user)
        ]
        return cls(messages=tuple(msgs), **kw)  # type: ignore[arg-type]


class Generation(BaseModel):
    """One sampled completion. `text` excludes the stop string that ended it."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: FinishReason = "stop"
    cost_usd: float = 0.0
    error: str | None = None


@runtime_checkable
class LM(Protocol):
    """A batched text generator.

    Contract: `generate(reqs)` returns a list as long as `reqs`; item i holds exactly `reqs[i].n`
    generations. A failure of one request is reported as generations with `finish_reason="error"`
    and `error` set; only systemic faults (no model, bad credentials) raise. With `seed` set and a
    backend that allows it, results do not depend on how requests are batched.
    """

    name: str

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]: ...


class ScoreRequest(BaseModel):
    """Continuations to score after a prompt (chat messages plus an assistant text)."""

    model_config = ConfigDict(frozen=True)
    messages: tuple[Message, ...]
    assistant_prefix: str = ""
    continuations: tuple[str, ...] = Field(min_length=1)


class Scores(BaseModel):
    """Total log-probability (nats) of each continuation, their token counts, the prompt's tokens."""

    logprobs: list[float]
    tokens: list[int]
    prompt_tokens: int


@runtime_checkable
class Scorer(Protocol):
    """An LM that can score given continuations (teacher forcing) instead of sampling.

    Contract: `score(reqs)` returns one `Scores` per request, with one log-probability per
    continuation: log P(continuation | rendered prompt + assistant_prefix), summed over its tokens.
    Used to choose among a closed set of answers and to measure how a memory item changes the
    likelihood of a verified solution.
    """

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]: ...


class GenStream(Protocol):
    """Requests in flight on one backend, answered as each completes (continuous batching).

    Contract: `submit(key, req)` queues a request under a caller-chosen key; `wait()` runs the
    backend until at least one submitted request has all its `n` generations and returns every
    request completed so far, each exactly once, as (key, generations); it returns [] only when
    nothing is in flight. A caller may submit more between waits: that is the point.
    """

    def submit(self, key: Hashable, req: GenRequest) -> None: ...

    def wait(self) -> list[tuple[Hashable, list[Generation]]]: ...


@runtime_checkable
class StreamingLM(LM, Protocol):
    """An `LM` that can also stream: `with lm.stream() as s:` gives a `GenStream`."""

    def stream(self) -> AbstractContextManager[GenStream]: ...


@runtime_checkable
class Reloadable(LM, Protocol):
    """An `LM` whose weights can be swapped in place: a fold's hand-off to the live backend.

    Contract: after `load_weights(path)` returns, every later `generate` uses the weights in `path`
    (a checkpoint folder: a full model, or a LoRA adapter on the current base).
    """

    def load_weights(self, path: str | Path) -> None: ...


class CallTally:
    """How many backend calls were made and how many failed (after retries), with the last error.

    A backend that turns failed calls into error generations keeps one, so a caller can tell a run
    whose every call failed (a failed run) from a measured accuracy of zero. Thread-safe: backends
    call from worker threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.failed = 0
        self.last_error: str | None = None

    def record(self, error: str | None = None) -> None:
        """Count one call; `error` set means it failed."""
        with self._lock:
            self.calls += 1
            if error is not None:
                self.failed += 1
                self.last_error = error

    @property
    def all_failed(self) -> bool:
        """At least one call was made and none succeeded."""
        return self.calls > 0 and self.failed == self.calls


@runtime_checkable
class Tallied(Protocol):
    """A backend whose failed calls come back as error generations, counted in `tally`."""

    tally: CallTally


def render_plain(req: GenRequest) -> str:
    """A template-free rendering, for backends or tests without a chat template."""
    parts = [f"{m.role}: {m.content}" for m in req.messages]
    return "\n".join(parts) + "\nassistant: " + req.assistant_prefix


def truncate_at_pattern(text: str, pattern: str | None) -> tuple[str, bool]:
    """Cut `text` after the first match of `pattern` (kept); return (text, whether it matched)."""
    if not pattern:
        return text, False
    m = re.search(pattern, text)
    return (text[: m.end()], True) if m else (text, False)


def truncate_at_stop(text: str, stop: tuple[str, ...] | list[str]) -> tuple[str, bool]:
    """Cut `text` at the earliest stop string; return (text, whether a stop string was found)."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)
