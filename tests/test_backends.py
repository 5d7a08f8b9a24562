"""Unit tests for the LM backends on fakes: retry policy, concurrency bound, stop truncation,
token and cost accounting, `n` fallback, assistant-prefix placement, the hf prefix cache."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import litellm
import pytest
import torch
from insightloop.agent.backends import make_lm
from insightloop.agent.backends.api import CONTINUE_INSTRUCTION, LiteLLMBackend, LMConfigError, is_transient
from insightloop.agent.backends.decode import Engine, Row, _top_p
from insightloop.agent.backends.hf import _sample_seed
from insightloop.agent.backends.kv import PrefixCache
from insightloop.core.config import ModelConfig
from insightloop.core.lm import LM, GenRequest, truncate_at_stop

MODEL = "openai/fake-model"
_REQ = httpx.Request("POST", "http://fake/v1/chat/completions")


def _response(texts: list[str], prompt: int = 10, completion: int = 7, model: str = "fake-model",
              finish: str = "stop") -> litellm.ModelResponse:
    choices = [{"index": i, "finish_reason": finish, "message": {"role": "assistant", "content": t}}
               for i, t in enumerate(texts)]
    return litellm.ModelResponse(model=model, choices=choices,
                                 usage={"prompt_tokens": prompt, "completion_tokens": completion,
                                        "total_tokens": prompt + completion})


def _http(code: int) -> httpx.Response:
    return httpx.Response(code, request=_REQ)


def _errors() -> dict[str, Exception]:
    return {
        "429": litellm.RateLimitError("slow down", "openai", MODEL, response=_http(429)),
        "500": litellm.InternalServerError("boom", "openai", MODEL, response=_http(500)),
        "503": litellm.ServiceUnavailableError("busy", "openai", MODEL, response=_http(503)),
        "timeout": litellm.Timeout("timed out", MODEL, "openai"),
        "conn": litellm.APIConnectionError("refused", "openai", MODEL, request=_REQ),
        "400": litellm.BadRequestError("bad prompt", MODEL, "openai", response=_http(400)),
        "401": litellm.AuthenticationError("bad key", "openai", MODEL, response=_http(401)),
        "404": litellm.NotFoundError("no such model", MODEL, "openai", response=_http(404)),
    }


class FakeCompletion:
    """Raises the queued errors first, then answers; records every call's kwargs."""

    def __init__(self, errors: list[Exception] | None = None, texts: list[str] | None = None,
                 honour_n: bool = True, delay: float = 0.0) -> None:
        self.errors = list(errors or [])
        self.texts = texts or ["hello"]
        self.honour_n = honour_n
        self.delay = delay
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

    def __call__(self, **kw: Any) -> litellm.ModelResponse:
        with self._lock:
            self.calls.append(kw)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            err = self.errors.pop(0) if self.errors else None
        try:
            if self.delay:
                time.sleep(self.delay)
            if err is not None:
                raise err
            n = kw.get("n", 1) if self.honour_n else 1
            return _response([self.texts[i % len(self.texts)] for i in range(n)])
        finally:
            with self._lock:
                self.active -= 1


def _backend(fake: FakeCompletion, waits: list[float] | None = None, **cfg: Any) -> LiteLLMBackend:
    config = ModelConfig(backend="litellm", model=MODEL, api_base="http://fake/v1", **cfg)
    sleeps = waits if waits is not None else []
    return LiteLLMBackend(config, completion=fake, sleep=sleeps.append)


# ---- retry policy ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["429", "500", "503", "timeout", "conn"])
def test_transient_errors_are_retried_with_backoff(kind: str) -> None:
    fake, waits = FakeCompletion(errors=[_errors()[kind], _errors()[kind]]), []
    out = _backend(fake, waits, max_retries=3).generate([GenRequest.chat("hi")])
    assert out[0][0].text == "hello" and out[0][0].finish_reason == "stop"
    assert len(fake.calls) == 3
    assert len(waits) == 2 and all(0 <= w <= 30.0 for w in waits)


@pytest.mark.parametrize("kind", ["429", "500", "503", "timeout", "conn"])
def test_is_transient_classifies_retryable(kind: str) -> None:
    assert is_transient(_errors()[kind])


def test_backoff_grows_exponentially_on_average() -> None:
    # wait_random_exponential draws uniformly in [0, 0.5 * 2**(attempt - 1)], capped at 30 s.
    fake, waits = FakeCompletion(errors=[_errors()["429"]] * 6), []
    _backend(fake, waits, max_retries=6).generate([GenRequest.chat("hi")])
    assert len(waits) == 6
    caps = [0.5 * 2**i for i in range(6)]
    assert all(w <= min(cap, 30.0) for w, cap in zip(waits, caps, strict=True))


def test_bad_request_is_not_retried_and_reported() -> None:
    fake, waits = FakeCompletion(errors=[_errors()["400"]]), []
    out = _backend(fake, waits, max_retries=4).generate([GenRequest.chat("hi", n=2)])
    assert len(fake.calls) == 1 and waits == []
    assert [g.finish_reason for g in out[0]] == ["error", "error"]
    assert "bad prompt" in (out[0][0].error or "")


@pytest.mark.parametrize("kind", ["401", "404"])
def test_auth_and_config_errors_raise_clearly(kind: str) -> None:
    fake = FakeCompletion(errors=[_errors()[kind]])
    with pytest.raises(LMConfigError, match="model string"):
        _backend(fake, max_retries=4).generate([GenRequest.chat("hi")])
    assert len(fake.calls) == 1


def test_gives_up_after_max_retries() -> None:
    fake, waits = FakeCompletion(errors=[_errors()["429"]] * 10), []
    out = _backend(fake, waits, max_retries=2).generate([GenRequest.chat("hi")])
    assert len(fake.calls) == 3 and len(waits) == 2
    gen = out[0][0]
    assert gen.finish_reason == "error" and gen.text == "" and "RateLimitError" in (gen.error or "")


def test_missing_credentials_is_a_config_error_even_as_500() -> None:
    err = litellm.InternalServerError("OpenAIException - Missing credentials. Please pass an `api_key`",
                                      "openai", MODEL, response=_http(500))
    fake = FakeCompletion(errors=[err])
    with pytest.raises(LMConfigError, match="Missing credentials"):
        _backend(fake, max_retries=3).generate([GenRequest.chat("hi")])
    assert len(fake.calls) == 1


def test_local_server_gets_a_placeholder_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    fake = FakeCompletion()
    _backend(fake).generate([GenRequest.chat("hi")])
    assert fake.calls[0]["api_key"] == "EMPTY"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-real")
    fake = FakeCompletion()
    _backend(fake).generate([GenRequest.chat("hi")])
    assert "api_key" not in fake.calls[0]  # litellm picks up the provider's own variable


def test_missing_api_key_env_raises() -> None:
    cfg = ModelConfig(backend="litellm", model=MODEL, api_key_env="INSIGHTLOOP_SURELY_UNSET_KEY")
    with pytest.raises(LMConfigError, match="INSIGHTLOOP_SURELY_UNSET_KEY"):
        LiteLLMBackend(cfg, completion=FakeCompletion())


def test_api_key_and_base_are_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INSIGHTLOOP_TEST_KEY", "sk-test")
    fake = FakeCompletion()
    cfg = ModelConfig(backend="litellm", model=MODEL, api_base="http://x/v1",
                      api_key_env="INSIGHTLOOP_TEST_KEY")
    LiteLLMBackend(cfg, completion=fake).generate([GenRequest.chat("hi", seed=5, temperature=0.0)])
    call = fake.calls[0]
    assert call["api_key"] == "sk-test" and call["api_base"] == "http://x/v1"
    assert call["seed"] == 5 and call["temperature"] == 0.0 and call["max_retries"] == 0


# ---- concurrency, n, stop, accounting ----------------------------------------------------------

def test_concurrency_is_bounded() -> None:
    fake = FakeCompletion(delay=0.05)
    out = _backend(fake, max_concurrency=3).generate([GenRequest.chat(f"q{i}") for i in range(12)])
    assert len(out) == 12 and len(fake.calls) == 12
    assert fake.max_active == 3


def test_n_is_looped_when_the_server_ignores_it() -> None:
    fake = FakeCompletion(honour_n=False, texts=["a"])
    backend = _backend(fake)
    out = backend.generate([GenRequest.chat("hi", n=3, seed=10)])
    assert len(out[0]) == 3
    assert [c.get("seed") for c in fake.calls] == [10, 11, 12]
    fake.calls.clear()
    out = backend.generate([GenRequest.chat("x", n=2, seed=1), GenRequest.chat("y", n=2)])
    assert [len(g) for g in out] == [2, 2]
    assert len(fake.calls) == 4 and all("n" not in c for c in fake.calls)  # learned: single calls only


def test_n_in_one_call_when_honoured() -> None:
    fake = FakeCompletion(texts=["a", "b", "c"])
    out = _backend(fake).generate([GenRequest.chat("hi", n=3)])
    assert [g.text for g in out[0]] == ["a", "b", "c"] and len(fake.calls) == 1


def test_stop_strings_are_sent_and_applied_locally() -> None:
    fake = FakeCompletion(texts=["step one\nANSWER: 4\nmore"])
    req = GenRequest.chat("hi", stop=("ANSWER:", "\n\n", "x1", "x2", "x3"))
    out = _backend(fake).generate([req])
    assert out[0][0].text == "step one\n" and out[0][0].finish_reason == "stop"
    assert fake.calls[0]["stop"] == ["ANSWER:", "\n\n", "x1", "x2"]  # OpenAI accepts at most 4


def test_truncate_at_stop_picks_the_earliest() -> None:
    assert truncate_at_stop("a;b.c", (".", ";")) == ("a", True)
    assert truncate_at_stop("abc", ("x",)) == ("abc", False)
    assert truncate_at_stop("abc", ("",)) == ("abc", False)


def test_token_accounting_sums_to_usage() -> None:
    fake = FakeCompletion(texts=["a", "b", "c"])
    gens = _backend(fake).generate([GenRequest.chat("hi", n=3)])[0]
    assert [g.prompt_tokens for g in gens] == [10, 10, 10]  # each sample saw the whole prompt
    assert sum(g.completion_tokens for g in gens) == 7
    assert all(g.cost_usd == 0.0 for g in gens)  # unknown model: no price


def test_cost_from_litellm_price_table() -> None:
    def priced(**kw: Any) -> litellm.ModelResponse:
        return _response(["ok"], prompt=1000, completion=500, model="gpt-4o-mini")

    cfg = ModelConfig(backend="litellm", model="gpt-4o-mini")
    gen = LiteLLMBackend(cfg, completion=priced).generate([GenRequest.chat("hi")])[0][0]
    expected = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
    assert gen.cost_usd == pytest.approx(sum(expected)) and gen.cost_usd > 0


def test_cost_of_n_choices_is_counted_once() -> None:
    def priced(**kw: Any) -> litellm.ModelResponse:
        return _response(["a", "b"], prompt=1000, completion=500, model="gpt-4o-mini")

    cfg = ModelConfig(backend="litellm", model="gpt-4o-mini")
    gens = LiteLLMBackend(cfg, completion=priced).generate([GenRequest.chat("hi", n=2)])[0]
    expected = litellm.cost_per_token(model="gpt-4o-mini", prompt_tokens=1000, completion_tokens=500)
    assert sum(g.cost_usd for g in gens) == pytest.approx(sum(expected)) and gens[1].cost_usd == 0.0
    assert [g.completion_tokens for g in gens] == [250, 250]


def test_length_finish_reason() -> None:
    def cut(**kw: Any) -> litellm.ModelResponse:
        return _response(["partial"], finish="length")

    backend = LiteLLMBackend(ModelConfig(backend="litellm", model=MODEL), completion=cut)
    gen = backend.generate([GenRequest.chat("hi")])[0][0]
    assert gen.finish_reason == "length"


# ---- assistant prefix placement ----------------------------------------------------------------

def test_assistant_prefix_user_mode() -> None:
    fake = FakeCompletion()
    req = GenRequest.chat("What is 2+2?", system="Be brief.", assistant_prefix="Step 1: add")
    _backend(fake).generate([req])
    msgs = fake.calls[0]["messages"]
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"].startswith("What is 2+2?") and CONTINUE_INSTRUCTION in msgs[1]["content"]
    assert msgs[1]["content"].endswith("Step 1: add") and "extra_body" not in fake.calls[0]


def test_assistant_prefix_continue_mode() -> None:
    fake = FakeCompletion()
    req = GenRequest.chat("What is 2+2?", assistant_prefix="Step 1: add")
    _backend(fake, assistant_prefix_mode="continue").generate([req])
    call = fake.calls[0]
    assert call["messages"][-1] == {"role": "assistant", "content": "Step 1: add"}
    assert call["extra_body"] == {"continue_final_message": True, "add_generation_prompt": False}


def test_system_prompt_from_config() -> None:
    fake = FakeCompletion()
    _backend(fake, system_prompt="You solve puzzles.").generate([GenRequest.chat("hi")])
    assert fake.calls[0]["messages"][0] == {"role": "system", "content": "You solve puzzles."}


def test_make_lm_builds_litellm_without_network() -> None:
    lm = make_lm(ModelConfig(backend="litellm", model=MODEL, api_base="http://127.0.0.1:9/v1"))
    assert isinstance(lm, LiteLLMBackend) and isinstance(lm, LM) and lm.name == f"litellm:{MODEL}"


# ---- hf helpers --------------------------------------------------------------------------------

def _kv(n: int, value: float = 1.0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    t = torch.arange(n, dtype=torch.float32).view(1, 1, n, 1) + value
    return [(t, t.clone()) for _ in range(2)]


def test_prefix_cache_longest_common_prefix() -> None:
    cache = PrefixCache(capacity_tokens=100)
    cache.put([1, 2, 3, 4, 5], _kv(5))
    cache.put([1, 2, 9], _kv(3, 10.0))
    n, kv = cache.lookup([1, 2, 3, 7, 7])
    assert n == 3 and kv is not None and kv[0][0].shape[2] == 3
    assert kv[0][0].flatten().tolist() == [1.0, 2.0, 3.0]
    n, kv = cache.lookup([1, 2, 3, 4, 5])  # whole prompt cached: leave one token to run
    assert n == 4
    assert cache.lookup([8, 8]) == (0, None)


def test_prefix_cache_evicts_by_tokens_and_drops_superseded() -> None:
    cache = PrefixCache(capacity_tokens=10)
    cache.put([1, 2], _kv(2))
    cache.put([1, 2, 3, 4], _kv(4))  # [1, 2] is a prefix of it: redundant
    assert cache.tokens == 4
    cache.put([5, 6, 7, 8], _kv(4))
    cache.put([9, 9, 9], _kv(3))  # 11 tokens > 10: the least recently used entry goes
    assert cache.tokens == 7 and cache.lookup([1, 2, 3, 4, 0]) == (0, None)
    cache.put(list(range(50)), _kv(50))  # larger than the whole cache: not stored
    assert cache.tokens == 7


def test_sample_seed_is_stable_and_distinct() -> None:
    assert _sample_seed(3, 0) == _sample_seed(3, 0)
    assert len({_sample_seed(s, j) for s in range(5) for j in range(5)}) == 25


def test_top_p_keeps_the_nucleus() -> None:
    probs = torch.tensor([0.1, 0.5, 0.3, 0.1])
    kept = _top_p(probs.clone(), 0.7)
    assert kept.tolist() == pytest.approx([0.0, 0.5, 0.3, 0.0])
    assert _top_p(probs.clone(), 0.1).tolist() == pytest.approx([0.0, 0.5, 0.0, 0.0])


def _sampler(rows: list[Row]) -> Engine:
    engine = Engine(lambda *a: torch.zeros(0), 1, [], set(), 0, torch.device("cpu"), 8, None)
    engine.live = rows
    return engine


def _row(seed: int | None, temperature: float = 1.0, top_p: float = 1.0) -> Row:
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return Row("k", 0, [1], gen, temperature, top_p, 8, ())


def test_sampling_follows_the_distribution_and_skips_zero_mass() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.0, 0.3, 0.2, 0.0]]))
    engine = _sampler([_row(0)])
    draws = [engine._sample(logits)[0] for _ in range(4000)]
    freq = [draws.count(t) / len(draws) for t in range(5)]
    assert freq[1] == 0 and freq[4] == 0
    assert freq[0] == pytest.approx(0.5, abs=0.03) and freq[2] == pytest.approx(0.3, abs=0.03)
    nucleus = _sampler([_row(1, top_p=0.6)])
    assert {nucleus._sample(logits)[0] for _ in range(200)} == {0, 2}


def test_a_sampled_row_draws_the_same_tokens_alone_or_beside_other_rows() -> None:
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    alone = _sampler([_row(7, temperature=0.8)])
    mixed = _sampler([_row(None), _row(7, temperature=0.8), _row(3, temperature=1.3)])
    for _ in range(20):
        a = alone._sample(logits[1:2])[0]
        out = mixed._sample(logits)
        assert out[1] == a and out[0] == int(logits[0].argmax())


def test_prefix_cache_finds_long_prefixes_among_many_entries() -> None:
    cache = PrefixCache(capacity_tokens=10_000)
    base = list(range(100, 160))  # 60 tokens: three whole 16-token blocks and a partial one
    cache.put(base, _kv(60))
    for i in range(30):  # many unrelated, newer entries
        cache.put([1000 + i] * 20, _kv(20))
    n, kv = cache.lookup(base[:55] + [7, 7, 7])
    assert n == 55 and kv is not None and kv[0][0].shape[2] == 55
    n, _ = cache.lookup(base[:40] + [1])
    assert n == 40


def test_prepack_multiplies_like_linear_and_unpacks() -> None:
    import torch
    from insightloop.agent.backends import prepack

    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4, bias=False)).eval()
    x = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        plain = model(x)
        assert prepack.prepack(model) == (2 if prepack.available(model) else 0)
        assert torch.allclose(model(x), plain, atol=1e-5)
        with torch.no_grad():
            model[0].weight.mul_(2)  # a changed weight is only seen once packed again
        prepack.unpack(model)
        assert not any("forward" in m.__dict__ for m in model.modules())
        assert not torch.allclose(model(x), plain, atol=1e-3)
    assert prepack.prepack(model.to(torch.float64)) == 0  # only fp32 is packed
