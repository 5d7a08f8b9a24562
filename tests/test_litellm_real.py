"""The litellm backend against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1
serving the converted embedded SmolLM2 folder, started and stopped by a module fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from insightloop.agent.backends.api import LiteLLMBackend
from insightloop.core.config import ModelConfig
from insightloop.core.lm import GenRequest
from insightloop.core.models import embedded_policy_path

pytestmark = pytest.mark.real

STARTUP_SECONDS = 240


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_healthy(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text()[-3000:]
            raise RuntimeError(f"transformers serve exited with {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise RuntimeError(f"transformers serve not healthy after {STARTUP_SECONDS}s:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(api_base, model folder) of a running `transformers serve`."""
    folder = str(embedded_policy_path())
    port = _free_port()
    cli = Path(sys.executable).parent / "transformers"
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    # Passive OpenMP waiting: the server and the test share the CPU (see agent/backends/hf.py).
    env = {"OMP_WAIT_POLICY": "PASSIVE", **os.environ, "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(cli), "serve", folder, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
           "--dtype", "float32"]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_healthy(proc, f"http://127.0.0.1:{port}", log)
        yield f"http://127.0.0.1:{port}/v1", folder
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _lm(server: tuple[str, str], **kw: Any) -> LiteLLMBackend:
    api_base, folder = server
    cfg = ModelConfig(backend="litellm", model=f"openai/{folder}", api_base=api_base, max_retries=1,
                      timeout_s=120, **kw)
    return LiteLLMBackend(cfg)


def test_samples_stop_and_accounting(server: tuple[str, str]) -> None:
    lm = _lm(server, max_concurrency=2)
    req = GenRequest.chat("List three fruits, one per line.", n=2, max_tokens=24, temperature=0.8,
                          seed=1, stop=("\n",))
    gens = lm.generate([req])[0]
    assert len(gens) == 2  # transformers serve ignores n: the backend loops
    assert all(g.finish_reason in ("stop", "length") and g.error is None for g in gens)
    assert all("\n" not in g.text for g in gens)
    assert sum(g.prompt_tokens for g in gens) > 10 and all(g.completion_tokens >= 1 for g in gens)
    assert all(g.cost_usd == 0.0 for g in gens)  # a local model has no price


def test_greedy_matches_the_hf_backend(server: tuple[str, str]) -> None:
    from insightloop.agent.backends.hf import HFBackend

    req = GenRequest.chat("What is the capital of France?", max_tokens=12, temperature=0.0)
    remote = _lm(server).generate([req])[0][0]
    local = HFBackend(ModelConfig(model=server[1])).generate([req])[0][0]
    assert remote.text.strip() == local.text.strip()
    assert remote.prompt_tokens == local.prompt_tokens  # same chat template, same tokenizer


def test_concurrent_requests_and_assistant_prefix(server: tuple[str, str]) -> None:
    lm = _lm(server, max_concurrency=2)
    reqs = [GenRequest.chat(f"Give one word that rhymes with '{w}'.", max_tokens=8, temperature=0.0)
            for w in ("cat", "sun", "tree")]
    reqs.append(GenRequest.chat("What is 3 + 4?", assistant_prefix="First, 3 + 4", max_tokens=8,
                                temperature=0.0))
    out = lm.generate(reqs)
    assert [len(g) for g in out] == [1, 1, 1, 1]
    assert all(g[0].error is None and g[0].completion_tokens >= 1 for g in out)


def test_client_error_is_reported_not_retried(server: tuple[str, str]) -> None:
    import litellm

    calls: list[str] = []

    def counting(**kw: Any) -> Any:
        calls.append(kw["model"])
        return litellm.completion(**kw)

    api_base, _ = server
    cfg = ModelConfig(backend="litellm", model="openai/not-the-served-model", api_base=api_base,
                      max_retries=3)
    gen = LiteLLMBackend(cfg, completion=counting).generate([GenRequest.chat("hi", max_tokens=4)])[0][0]
    # What the backend promises: a 4xx comes back as an error generation naming its status, unretried
    # (the server's own wording is not ours to test).
    assert gen.finish_reason == "error" and (gen.error or "").startswith("HTTP 400 ")
    assert len(calls) == 1  # the server's 400 is not retried


def test_unreachable_server_gives_error_generations_after_retries() -> None:
    waits: list[float] = []
    cfg = ModelConfig(backend="litellm", model="openai/x", api_base=f"http://127.0.0.1:{_free_port()}/v1",
                      max_retries=2, timeout_s=5)
    gens = LiteLLMBackend(cfg, sleep=waits.append).generate([GenRequest.chat("hi", n=2, max_tokens=4)])[0]
    assert [g.finish_reason for g in gens] == ["error", "error"]
    assert "Connection" in (gens[0].error or "") and len(waits) == 2
