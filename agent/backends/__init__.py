"""LM backends behind the `LM` protocol: hf (embedded default), litellm (APIs), vllm (GPU).

`make_lm(cfg)` builds the backend named by `cfg.backend`; each backend module is imported only
when chosen, so torch, litellm or vllm load only if needed.
"""

from __future__ import annotations

from insightloop.core.config import ModelConfig
from insightloop.core.lm import LM


def make_lm(cfg: ModelConfig) -> LM:
    """The LM backend for a model config."""
    if cfg.backend == "hf":
        from insightloop.agent.backends.hf import HFBackend

        return HFBackend(cfg)
    elif cfg.backend == "litellm":
        from insightloop.agent.backends.api import LiteLLMBackend

        return LiteLLMBackend(cfg)
    elif cfg.backend == "vllm":
        from insightloop.agent.backends.vllm_engine import VLLMBackend

        return VLLMBackend(cfg)
    raise ValueError(f"unknown backend {cfg.backend!r}; use one of: hf, litellm, vllm")
