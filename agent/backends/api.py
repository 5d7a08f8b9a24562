"""The `litellm` backend: any provider, or any OpenAI-compatible server via `api_base`.

- Retries (tenacity): exponential backoff with jitter on rate limits (429), timeouts (408),
  connection errors and 5xx, at most `max_retries` times; never on other 4xx. After the retries, a
  request's generations come back with `finish_reason="error"` and the error text. Authentication,
  permission and unknown-model/provider errors raise `LMConfigError`: retrying cannot fix them.
- Bounded concurrency: calls run on a thread pool of `max_concurrency` workers.
- `tally` counts the calls and those that failed after the retries, so a run whose every call
  failed can be reported as a failed run rather than as an accuracy of zero.
- Accounting from the response's `usage`; cost from litellm's price table (0.0 for unknown models,
  e.g. a local server). As in the other backends, every generation reports the prompt it was
  conditioned on (so token budgets do not depend on whether a server honours `n`); with `n` choices
  in one response, completion tokens are split evenly and the cost is put on the first generation,
  so a request's completion tokens and dollars sum to what the provider billed.
- `n`: asked for in one call; a server that returns fewer choices (e.g. `transformers serve`) is
  remembered and later requests are sent as `n` single calls, sample k with seed `seed + k`.
- Stop strings are sent (the first four: OpenAI's limit) and applied again locally.
- `assistant_prefix` (chat APIs cannot be made to continue a reply in a portable way), chosen by
  `ModelConfig.assistant_prefix_mode`:
  `user` (default) restates the partial answer at the end of the last user turn and asks for its
  continuation, which works on every chat server; `continue` sends it as a final assistant message
  with `continue_final_message=True, add_generation_prompt=False` (vLLM's and SGLang's extension,
  the exact continuation; servers that validate fields, like `transformers serve`, reject it).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Hashable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from insightloop.core.config import ModelConfig
from insightloop.core.errors import UserError
from insightloop.core.lm import (
    CallTally,
    Generation,
    GenRequest,
    GenStream,
    truncate_at_pattern,
    truncate_at_stop,
)
from tenacity import Retrying, retry_if_exception, stop_after_attempt, wait_random_exponential

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # else litellm downloads prices at import

log = logging.getLogger(__name__)

CONFIG_MESSAGES = ("LLM Provider NOT provided", "Missing credentials")
LOCAL_KEY = "EMPTY"  # OpenAI clients insist on a key; local OpenAI-compatible servers ignore it
CONTINUE_INSTRUCTION = "Continue this partial answer from exactly where it stops, without repeating it:"
MAX_STOP = 4


class LMConfigError(UserError, RuntimeError):
    """The backend is misconfigured (credentials, model name, provider); retrying cannot help."""


def _status(err: BaseException) -> int | None:
    code = getattr(err, "status_code", None)
    return code if isinstance(code, int) else None


def is_transient(err: BaseException) -> bool:
    """Rate limits, timeouts, connection errors and 5xx are worth retrying; other 4xx are not."""
    import litellm

    if isinstance(err, (litellm.Timeout, litellm.APIConnectionError, TimeoutError, ConnectionError)):
        return True
    code = _status(err)
    return code is not None and (code in (408, 429) or code >= 500)


def is_config_error(err: BaseException) -> bool:
    import litellm

    if isinstance(err, (litellm.AuthenticationError, litellm.PermissionDeniedError, litellm.NotFoundError)):
        return True
    # litellm reports some configuration faults with generic classes (a missing key as a 500).
    text = str(err)
    return _status(err) in (401, 403, 404) or any(s in text for s in CONFIG_MESSAGES)


def _should_retry(err: BaseException) -> bool:
    return is_transient(err) and not is_config_error(err)


def _cost(response: Any) -> float:
    import litellm

    try:
        return float(litellm.completion_cost(completion_response=response))
    except Exception as err:  # litellm raises a bare Exception for models missing from its price table
        log.debug("no price for %s: %s", getattr(response, "model", "?"), err)
        return 0.0


class LiteLLMBackend:
    """`LM` over `litellm.completion`. `completion` and `sleep` can be injected for tests."""

    def __init__(self, cfg: ModelConfig, completion: Callable[..., Any] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self.name = f"litellm:{cfg.model}"
        self._api_key = self._read_key(cfg)
        if completion is None:
            import litellm

            litellm.suppress_debug_info = True  # its banners would go to stdout
            completion = litellm.completion
        self._completion = completion
        self._sleep = sleep
        self._n_supported: bool | None = None
        self._lock = threading.Lock()
        self.tally = CallTally()

    @staticmethod
    def _read_key(cfg: ModelConfig) -> str | None:
        if cfg.api_key_env is None:
            local = cfg.api_base and cfg.model.startswith("openai/") and not os.environ.get("OPENAI_API_KEY")
            return LOCAL_KEY if local else None
        key = os.environ.get(cfg.api_key_env)
        if not key:
            raise LMConfigError(f"api_key_env={cfg.api_key_env!r} is set but that environment variable is "
                                f"empty; export {cfg.api_key_env}=<key> or unset api_key_env")
        return key

    # ---- request building ----------------------------------------------------------------------

    def messages(self, req: GenRequest) -> list[dict[str, str]]:
        """The chat messages to send, with the assistant prefix placed per `assistant_prefix_mode`."""
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        if self.cfg.system_prompt and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        if not req.assistant_prefix:
            return msgs
        if self.cfg.assistant_prefix_mode == "continue":
            return msgs + [{"role": "assistant", "content": req.assistant_prefix}]
        note = f"\n\n{CONTINUE_INSTRUCTION}\n{req.assistant_prefix}"
        if msgs and msgs[-1]["role"] == "user":
            msgs[-1] = {"role": "user", "content": msgs[-1]["content"] + note}
        else:
            msgs.append({"role": "user", "content": note.strip()})
        return msgs

    def _kwargs(self, req: GenRequest, n: int, seed: int | None) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.cfg.model, "messages": self.messages(req), "n": n, "max_tokens": req.max_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "timeout": self.cfg.timeout_s,
            "max_retries": 0,  # retries are ours; the provider client must not multiply them
        }
        if req.stop:
            kw["stop"] = list(req.stop[:MAX_STOP])
        if seed is not None:
            kw["seed"] = seed
        if self.cfg.api_base:
            kw["api_base"] = self.cfg.api_base
        if self._api_key:
            kw["api_key"] = self._api_key
        if req.assistant_prefix and self.cfg.assistant_prefix_mode == "continue":
            kw["extra_body"] = {"continue_final_message": True, "add_generation_prompt": False}
        if n == 1:
            del kw["n"]  # some servers reject the field outright
        return kw

    # ---- calls ---------------------------------------------------------------------------------

    def _call(self, kwargs: dict[str, Any]) -> Any:
        retrying = Retrying(
            stop=stop_after_attempt(self.cfg.max_retries + 1),
            wait=wait_random_exponential(multiplier=0.5, max=30.0),
            retry=retry_if_exception(_should_retry),
            sleep=self._sleep,
            reraise=True,
        )
        return retrying(self._completion, **kwargs)

    def _parse(self, req: GenRequest, response: Any) -> list[Generation]:
        choices = list(response.choices)
        usage = getattr(response, "usage", None)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        cost = _cost(response)
        gens = []
        for k, choice in enumerate(choices):
            text, hit = truncate_at_stop(choice.message.content or "", req.stop)
            text, matched = truncate_at_pattern(text, req.stop_pattern)
            reason = "length" if choice.finish_reason == "length" and not (hit or matched) else "stop"
            share = completion // len(choices) + (1 if k < completion % len(choices) else 0)
            gens.append(Generation(text=text, prompt_tokens=prompt, completion_tokens=share,
                                   finish_reason=reason, cost_usd=cost if k == 0 else 0.0))
        return gens

    def _one(self, req: GenRequest, n: int, seed: int | None) -> list[Generation]:
        """One API call; errors become error generations, config errors raise."""
        try:
            gens = self._parse(req, self._call(self._kwargs(req, n, seed)))
        except Exception as err:
            if is_config_error(err):
                raise LMConfigError(self._explain(err)) from err
            log.warning("%s: request failed after retries: %s", self.name, err)
            status = _status(err)
            where = f"HTTP {status} " if status is not None else ""
            error = f"{where}{type(err).__name__}: {err}"
            self.tally.record(error)
            return [Generation(text="", finish_reason="error", error=error) for _ in range(n)]
        self.tally.record()
        return gens

    def _explain(self, err: BaseException) -> str:
        hint = f"check ${self.cfg.api_key_env}" if self.cfg.api_key_env else "set policy.api_key_env"
        return (f"{self.name} (api_base={self.cfg.api_base}) refused the request: "
                f"{type(err).__name__}: {err}. Check the model string (provider/model, "
                f"e.g. openai/<name>) and credentials ({hint}).")

    def _request(self, req: GenRequest) -> list[Generation]:
        """All `n` samples of a request; falls back to single calls when the server ignores `n`."""
        if req.n == 1 or self._n_supported is False:
            return self._one(req, 1, req.seed)
        gens = self._one(req, req.n, req.seed)
        if len(gens) < req.n and not any(g.finish_reason == "error" for g in gens):
            with self._lock:
                self._n_supported = False
            seeds = [None if req.seed is None else req.seed + k for k in range(len(gens), req.n)]
            for seed in seeds:
                gens += self._one(req, 1, seed)
        elif len(gens) >= req.n:
            self._n_supported = True
        return gens[: req.n]

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        """Run the requests' calls on at most `max_concurrency` threads."""
        if self._n_supported is False:
            return self._generate_split(reqs)
        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool:
            futures = [pool.submit(self._request, req) for req in reqs]
            return [f.result() for f in futures]

    @contextmanager
    def stream(self) -> Iterator[GenStream]:
        """Requests answered as they complete, on at most `max_concurrency` threads."""
        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool:
            yield _PoolStream(pool, self._request)

    def _generate_split(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        """Server known to ignore `n`: one call per sample, all on the pool."""
        jobs = [(i, req, None if req.seed is None else req.seed + k) for i, req in enumerate(reqs)
                for k in range(req.n)]
        with ThreadPoolExecutor(max_workers=self.cfg.max_concurrency) as pool:
            futures = [(i, pool.submit(self._one, req, 1, seed)) for i, req, seed in jobs]
            out: list[list[Generation]] = [[] for _ in reqs]
            for i, f in futures:
                out[i] += f.result()
        return out


class _PoolStream:
    """`GenStream` over a thread pool: each request is one task; `wait` returns the finished ones."""

    def __init__(self, pool: ThreadPoolExecutor, run: Callable[[GenRequest], list[Generation]]) -> None:
        self.pool = pool
        self.run = run
        self.futures: dict[Future[list[Generation]], Hashable] = {}

    def submit(self, key: Hashable, req: GenRequest) -> None:
        self.futures[self.pool.submit(self.run, req)] = key

    def wait(self) -> list[tuple[Hashable, list[Generation]]]:
        if not self.futures:
            return []
        done, _ = wait(self.futures, return_when=FIRST_COMPLETED)
        return [(self.futures.pop(f), f.result()) for f in done]
