"""The hf backend on the embedded SmolLM2 model: batching, n, stop strings, greedy determinism,
seeded sampling independent of batch composition, prefix reuse, and swapping weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from insightloop.agent.backends.hf import HFBackend
from insightloop.core.config import ModelConfig
from insightloop.core.lm import LM, GenRequest

pytestmark = pytest.mark.real

QUESTION = "What is 12 * 7? Answer briefly."
OTHER = "Write a long poem about the sea and the sky, please, with many details."


@pytest.fixture(scope="module")
def lm() -> HFBackend:
    return HFBackend(ModelConfig(max_batch=8))


def _texts(gens: list) -> list[str]:
    return [g.text for g in gens]


def test_protocol_and_counts(lm: HFBackend) -> None:
    assert isinstance(lm, LM) and lm.name.startswith("hf:")
    req = GenRequest.chat(QUESTION, n=3, max_tokens=6, temperature=0.9, seed=1)
    out = lm.generate([req, GenRequest.chat(OTHER, max_tokens=4, temperature=0.0)])
    assert [len(g) for g in out] == [3, 1]
    prompt_len = len(lm.encode(req))
    for g in out[0]:
        assert g.prompt_tokens == prompt_len and 1 <= g.completion_tokens <= 6
        assert g.finish_reason in ("stop", "length") and g.error is None
    assert out[1][0].completion_tokens == 4 and out[1][0].finish_reason == "length"


def test_greedy_matches_transformers_generate(lm: HFBackend) -> None:
    req = GenRequest.chat(QUESTION, max_tokens=12, temperature=0.0)
    ids = torch.tensor([lm.encode(req)])
    ref = lm.model.generate(ids, max_new_tokens=12, do_sample=False)
    expected = lm.tokenizer.decode(ref[0, ids.shape[1]:], skip_special_tokens=True)
    assert lm.generate([req])[0][0].text == expected


def test_greedy_is_deterministic_across_batches(lm: HFBackend) -> None:
    req = GenRequest.chat(QUESTION, max_tokens=10, temperature=0.0)
    alone = lm.generate([req])[0][0].text
    lm.prefixes.clear()
    mixed = lm.generate([GenRequest.chat(OTHER, max_tokens=10, temperature=0.0), req])
    assert mixed[1][0].text == alone
    assert lm.generate([req])[0][0].text == alone


def test_seeded_samples_do_not_depend_on_batch(lm: HFBackend) -> None:
    req = GenRequest.chat("Tell me a story.", n=3, max_tokens=10, temperature=1.0, seed=3)
    alone = _texts(lm.generate([req])[0])
    lm.prefixes.clear()
    with_others = lm.generate([GenRequest.chat(OTHER, n=2, max_tokens=4, temperature=1.0), req])
    assert _texts(with_others[1]) == alone
    single = lm.generate([req.model_copy(update={"n": 1})])[0][0].text
    assert single == alone[0]  # sample i does not depend on n either
    assert len(set(alone)) > 1  # and the samples differ from each other


def test_prefix_reuse_gives_the_same_text(lm: HFBackend) -> None:
    base = GenRequest.chat(QUESTION, assistant_prefix="Let me think.", max_tokens=10, temperature=0.0)
    child = base.model_copy(update={"assistant_prefix": "Let me think. 12 times 7"})
    lm.prefixes.clear()
    lm.generate([base])
    hits = lm.prefixes.hits
    with_reuse = lm.generate([child])[0][0].text
    assert lm.prefixes.hits == hits + 1 and lm.prefixes.reused_tokens > 20
    lm.cfg.prefix_reuse = False
    try:
        assert lm.generate([child])[0][0].text == with_reuse
    finally:
        lm.cfg.prefix_reuse = True


def test_stop_strings(lm: HFBackend) -> None:
    req = GenRequest.chat("Count from 1 to 20, separated by commas.", max_tokens=32, temperature=0.0,
                          stop=("7", "seventeen"))
    gen = lm.generate([req])[0][0]
    free = lm.generate([req.model_copy(update={"stop": ()})])[0][0]
    assert "7" in free.text  # the stop string would have appeared
    assert gen.finish_reason == "stop" and "7" not in gen.text
    assert free.text.startswith(gen.text) and gen.completion_tokens < free.completion_tokens


def test_load_weights_swaps_and_restores(lm: HFBackend, tmp_path: Path) -> None:
    req = GenRequest.chat(QUESTION, max_tokens=8, temperature=0.0)
    before = lm.generate([req])[0][0].text
    original = lm.model_path
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    with torch.no_grad():
        for name, param in lm.model.named_parameters():
            if name.endswith("norm.weight"):
                param.mul_(0.5)
    lm.model.save_pretrained(tmp_path / "fold", safe_serialization=True)
    lm.model.load_state_dict(state)
    lm.load_weights(tmp_path / "fold")
    assert lm.prefixes.tokens == 0 and lm.model_path == str(tmp_path / "fold")
    after = lm.generate([req])[0][0].text
    assert after != before
    lm.load_weights(original)
    assert lm.generate([req])[0][0].text == before


def test_load_weights_merges_a_lora_adapter(lm: HFBackend, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    req = GenRequest.chat(QUESTION, max_tokens=8, temperature=0.0)
    before = lm.generate([req])[0][0].text
    original = lm.model_path
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(original, dtype=torch.float32)
    peft_model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:  # LoRA starts as a no-op (B = 0); make it change the model
                param.normal_(0.0, 0.05, generator=torch.Generator().manual_seed(0))
    peft_model.save_pretrained(tmp_path / "adapter")
    q_before = lm.model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    lm.load_weights(tmp_path / "adapter")
    # Merged, not wrapped: the base weights moved and no LoRA module is left in the served model.
    assert not torch.equal(lm.model.model.layers[0].self_attn.q_proj.weight, q_before)
    assert not any("lora" in name for name, _ in lm.model.named_parameters())
    q = lm.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 3, q.in_features, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():  # packed again from the merged weights, not the stale packed copy
        assert "forward" in q.__dict__ and torch.allclose(q(x), torch.nn.functional.linear(x, q.weight), atol=1e-4)
    lm.load_weights(original)
    assert lm.generate([req])[0][0].text == before


def test_load_weights_rejects_empty_folder(lm: HFBackend, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no model"):
        lm.load_weights(tmp_path)


def test_packed_weights_decode_like_plain_ones(lm: HFBackend) -> None:
    """`policy.prepack` (on by default on a CPU) changes the speed, not the greedy text."""
    assert lm.packed == sum(type(m) is torch.nn.Linear for m in lm.model.modules()) > 0
    plain = HFBackend(ModelConfig(max_batch=8, prepack=False))
    assert plain.packed == 0 and not any("forward" in m.__dict__ for m in plain.model.modules())
    reqs = [GenRequest.chat(q, max_tokens=16, temperature=0.0) for q in (QUESTION, OTHER, "Name a color.")]
    assert [g[0].text for g in lm.generate(reqs)] == [g[0].text for g in plain.generate(reqs)]
