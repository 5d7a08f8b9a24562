"""LM backends behind the `LM` protocol: hf (embedded default), litellm (APIs), vllm (GPU).

`make_lm(cfg)` builds the backend named by `cfg.backend`. The litellm and vllm backends import
their libraries only when constructed; the hf backend module imports torch at its top, so it is
imported only when chosen.
"""

from __future__ import annotations

from insightloop.agent.backends.api import LiteLLMBackend
from insightloop.agent.backends.vllm_engine import VLLMBackend
from insightloop.core.config import ModelConfig
from insightloop.core.lm import LM


def make_lm(cfg: ModelConfig) -> LM:
    """The LM backend for a model config."""
    if cfg.backend == "hf":
        from insightloop.agent.backends.hf import HFBackend

        return HFBackend(cfg)
    elif cfg.backend == "litellm":
        return LiteLLMBackend(cfg)
    elif cfg.backend == "vllm":
        return VLLMBackend(cfg)
    raise ValueError(f"unknown backend {cfg.backend!r}; use one of: hf, litellm, vllm")
