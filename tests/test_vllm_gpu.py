"""The vllm backend on a GPU (skipped without CUDA): n, stop, seeds, prefix caching, weight reload."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from insightloop.core.config import ModelConfig
from insightloop.core.lm import GenRequest

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(scope="module")
def lm():  # type: ignore[no-untyped-def]
    pytest.importorskip("vllm")
    from insightloop.agent.backends.vllm_engine import VLLMBackend

    return VLLMBackend(ModelConfig(backend="vllm", gpu_memory_utilization=0.3))


def test_samples_stop_and_counts(lm) -> None:  # type: ignore[no-untyped-def]
    req = GenRequest.chat("Count from 1 to 20, separated by commas.", n=3, max_tokens=48,
                          temperature=0.0, stop=("7",))
    gens = lm.generate([req])[0]
    assert len(gens) == 3
    assert all("7" not in g.text and g.finish_reason == "stop" for g in gens)
    assert all(g.prompt_tokens > 10 and g.completion_tokens >= 1 for g in gens)


def test_seeded_sampling_ignores_batch(lm) -> None:  # type: ignore[no-untyped-def]
    req = GenRequest.chat("Tell me a story.", n=2, max_tokens=12, temperature=1.0, seed=7)
    alone = [g.text for g in lm.generate([req])[0]]
    mixed = lm.generate([GenRequest.chat("Write a poem.", max_tokens=12, temperature=1.0), req])
    assert [g.text for g in mixed[1]] == alone


def test_assistant_prefix_is_continued(lm) -> None:  # type: ignore[no-untyped-def]
    req = GenRequest.chat("What is 2 + 2?", assistant_prefix="2 + 2 =", max_tokens=4, temperature=0.0)
    assert "4" in lm.generate([req])[0][0].text


def test_load_weights_swaps_and_restores(lm, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    req = GenRequest.chat("What is 12 * 7?", max_tokens=8, temperature=0.0)
    before = lm.generate([req])[0][0].text
    original = lm.model_path
    model = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.mul_(0.5)
    model.save_pretrained(tmp_path / "fold")
    lm.load_weights(tmp_path / "fold")
    assert lm.generate([req])[0][0].text != before
    lm.load_weights(original)
    assert lm.generate([req])[0][0].text == before
