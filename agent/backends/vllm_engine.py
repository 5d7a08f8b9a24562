"""The `vllm` backend: an in-process `vllm.LLM` engine on a GPU, with automatic prefix caching.

vllm is imported lazily (it is an optional `gpu` extra). Prompts are rendered with the model's chat
template through its tokenizer, then the assistant prefix is appended, so the engine continues the
reasoning path exactly; the shared prefixes of a search tree hit vLLM's prefix cache.

`load_weights(path)` swaps in a fold's checkpoint without restarting, with vLLM's documented
reload sequence (example `offline_inference/skip_loading_weights_in_engine_init.py`): point the
workers' model config at the new folder with `collective_rpc("update_config", ...)`, then
`collective_rpc("reload_weights")`; the prefix cache is reset because it holds keys/values
computed with the old weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from insightloop.core.config import ModelConfig
from insightloop.core.lm import Generation, GenRequest, truncate_at_pattern, truncate_at_stop
from insightloop.core.models import resolve_policy

INSTALL_VLLM = "pip install 'insightloop[gpu]'  (or: pip install vllm)"


class VLLMBackend:
    """`LM` over `vllm.LLM`. Seeds are per request (`SamplingParams.seed`), so batching does not
    change a seeded request's samples."""

    def __init__(self, cfg: ModelConfig) -> None:
        try:
            import vllm
        except ImportError as err:
            raise RuntimeError(f"the vllm backend needs vllm; install it with: {INSTALL_VLLM}") from err
        self.cfg = cfg
        self.model_path = resolve_policy(cfg.model)
        self.name = f"vllm:{Path(self.model_path).name}"
        self._vllm = vllm
        self.llm = vllm.LLM(
            model=self.model_path,
            enable_prefix_caching=True,
            dtype=cfg.dtype,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            seed=0,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, req: GenRequest) -> str:
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        if self.cfg.system_prompt and not any(m["role"] == "system" for m in msgs):
            msgs.insert(0, {"role": "system", "content": self.cfg.system_prompt})
        text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return str(text) + req.assistant_prefix

    def sampling_params(self, req: GenRequest) -> Any:
        return self._vllm.SamplingParams(
            n=req.n, temperature=req.temperature, top_p=req.top_p, max_tokens=req.max_tokens,
            stop=list(req.stop) or None, seed=req.seed,
        )

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        """One engine call for the whole batch; vLLM schedules and caches prefixes itself."""
        if not reqs:
            return []
        prompts = [self.render(r) for r in reqs]
        outputs = self.llm.generate(prompts, [self.sampling_params(r) for r in reqs], use_tqdm=False)
        result = []
        for req, out in zip(reqs, outputs, strict=True):
            gens = []
            for comp in out.outputs:
                text, hit = truncate_at_stop(comp.text, req.stop)
                text, matched = truncate_at_pattern(text, req.stop_pattern)  # vLLM has no regex stop
                reason = "length" if comp.finish_reason == "length" and not (hit or matched) else "stop"
                gens.append(Generation(text=text, prompt_tokens=len(out.prompt_token_ids or []),
                                       completion_tokens=len(comp.token_ids), finish_reason=reason))
            result.append(gens)
        return result

    def load_weights(self, path: str | Path) -> None:
        """Reload weights in place from a full-model checkpoint folder (same architecture)."""
        folder = Path(path)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} holds no model (no config.json)")
        self.llm.collective_rpc("update_config", args=({"model_config": {"model": str(folder)}},))
        self.llm.collective_rpc("reload_weights")
        self.llm.reset_prefix_cache()
        self.model_path = str(folder)
