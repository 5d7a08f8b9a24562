"""The `hf` backend: transformers on CPU or GPU, the embedded default.

Generation is an own sampling loop over the model's forward pass with a key/value cache, because
the search needs two things `model.generate` does not give:

- **Batch-independent seeded sampling.** Every sample (row) draws from its own `torch.Generator`
  seeded from `(request.seed, sample index)`, so the random draws of a request's samples never
  depend on what else is in the batch. What does not hold exactly: the logits of a row are computed
  in a padded batch, so float rounding can differ with batch shape; a token whose probability sits
  on a sampling boundary (or a near-tie under greedy) can then flip. In practice on CPU fp32 rows
  agree.
- **Prefix reuse** (`ModelConfig.prefix_reuse`). A request's prompt is prefilled once and its cache
  expanded to its `n` samples; prompts are also looked up in an LRU of earlier prompts' and finished
  samples' caches, and only the tokens after the longest common token prefix are prefilled (the
  search asks for children and rollouts of the same path again and again).
- **Continuous batching** (`agent.backends.decode`): up to `max_batch` rows decode together and a
  finished row's slot is refilled from waiting requests at once; `stream()` lets a caller (the
  search driver) submit requests while others are decoding, so the batch stays full.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path

# Idle OpenMP workers spin by default; on a busy CPU (more runnable threads than cores) every
# parallel region then waits for descheduled spinners. Measured on 2 shared cores at load ~13,
# SmolLM2 batch 1 went from 0.5 to 20 tokens/s with passive waiting. Only effective if torch is not
# imported yet; export OMP_WAIT_POLICY to be sure.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from insightloop.agent.backends import prepack
from insightloop.agent.backends.decode import Engine, Row
from insightloop.agent.backends.kv import PrefixCache
from insightloop.core.config import ModelConfig
from insightloop.core.lm import (
    Generation,
    GenRequest,
    GenStream,
    Message,
    ScoreRequest,
    Scores,
    render_plain,
    truncate_at_pattern,
    truncate_at_stop,
)
from insightloop.core.models import resolve_policy
from transformers.cache_utils import Cache

log = logging.getLogger(__name__)


def _sample_seed(seed: int, index: int) -> int:
    """A stable per-sample seed: sample i of a request never depends on n or on other requests."""
    return (seed * 1_000_003 + index * 7_919 + 0x5EED) % (2**63 - 1)


def _usable_cpus() -> int:
    """CPUs this process may run on (respects affinity masks and container pinning)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype != "auto":
        return getattr(torch, dtype)
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # half precision is slow or unsupported for CPU matmuls


class HFBackend:
    """`LM` over a transformers causal LM. See the module docstring for what seeding guarantees."""

    def __init__(self, cfg: ModelConfig, rng: random.Random | None = None, ignore_eos: bool = False) -> None:
        self.cfg = cfg
        self.rng = rng or random.Random()
        self.ignore_eos = ignore_eos  # benchmarks decode a fixed length
        torch.set_num_threads(cfg.threads or _usable_cpus())
        self.device = _pick_device(cfg.device)
        self.dtype = _pick_dtype(cfg.dtype, self.device)
        self.model_path = resolve_policy(cfg.model)
        self.name = f"hf:{Path(self.model_path).name}"
        self.prefixes = PrefixCache(cfg.prefix_cache_tokens)
        self._lock = threading.RLock()  # one model: callers on several threads take turns
        self._load(self.model_path, tokenizer=True)

    # ---- loading -------------------------------------------------------------------------------

    def _load(self, path: str, tokenizer: bool) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Load both before assigning either, so a bad folder leaves the serving model intact.
        tok = AutoTokenizer.from_pretrained(path) if tokenizer else self.tokenizer
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.tokenizer, self.model = tok, model.to(self.device).eval()
        self._pack()
        self.prefixes.clear()  # cached keys/values belong to the old weights
        self._surgery = self._cache_is_plain()
        eos = self.model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids)
        # Each token's text, for stop checks during decoding without a decode call per row and step.
        self.token_text = self.tokenizer.batch_decode([[i] for i in range(len(self.tokenizer))],
                                                      skip_special_tokens=True)

    def _pack(self) -> None:
        """Packed linear weights for CPU fp32 decoding (`agent.backends.prepack`), when configured."""
        self.packed = prepack.prepack(self.model) if self.cfg.prepack else 0

    def _cache_is_plain(self) -> bool:
        """Prefix reuse edits caches directly; that is only valid for full-attention dynamic layers."""
        from transformers import DynamicCache
        from transformers.cache_utils import DynamicLayer

        cache = DynamicCache(config=self.model.config)
        return bool(cache.layers) and all(type(layer) is DynamicLayer for layer in cache.layers)

    def load_weights(self, path: str | Path) -> None:
        """Swap in new weights (a fold's checkpoint folder: a full model, or a LoRA adapter on the
        current base) without restarting the process. The tokenizer is kept unless the folder has one."""
        with self._lock:
            self._load_weights(Path(path))

    def _load_weights(self, folder: Path) -> None:
        if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{folder} holds no model (no config.json or adapter_config.json)")
        if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
            from peft import PeftModel

            prepack.unpack(self.model)  # the adapter merges into the plain weights; packed again after
            merged = PeftModel.from_pretrained(self.model, str(folder)).merge_and_unload()
            self.model = merged.to(self.device).eval()
            self._pack()
            self.prefixes.clear()
            return
        self._load(str(folder), tokenizer=(folder / "tokenizer_config.json").is_file())
        self.model_path = str(folder)

    # ---- prompts -------------------------------------------------------------------------------

    def render(self, req: GenRequest) -> str:
        """The prompt text: chat template with the generation prompt, then the assistant prefix."""
        if self.cfg.system_prompt and not any(m.role == "system" for m in req.messages):
            system = Message(role="system", content=self.cfg.system_prompt)
            req = req.model_copy(update={"messages": (system, *req.messages)})
        if not getattr(self.tokenizer, "chat_template", None):
            return render_plain(req)  # a base model without a chat template
        msgs = [{"role": m.role, "content": m.content} for m in req.messages]
        text = self.tokenizer.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        return str(text) + req.assistant_prefix

    def encode(self, req: GenRequest) -> list[int]:
        return list(self.tokenizer(self.render(req), add_special_tokens=False)["input_ids"])

    def _rows(self, key: Hashable, req: GenRequest) -> list[Row]:
        ids = self.encode(req)
        seed = req.seed if req.seed is not None else self.rng.getrandbits(62)
        rows = []
        for j in range(req.n):
            gen = None
            if req.temperature > 0:
                gen = torch.Generator(device=self.device).manual_seed(_sample_seed(seed, j))
            rows.append(Row(key, j, ids, gen, req.temperature, req.top_p, req.max_tokens, req.stop,
                            req.stop_pattern))
        return rows

    # ---- generation ----------------------------------------------------------------------------

    def engine(self) -> Engine:
        """A continuous-batching engine over this model (callers hold the backend's lock)."""
        reuse = self.cfg.prefix_reuse and self._surgery
        return Engine(self._forward, self.model.config.num_hidden_layers, self.token_text, self.eos_ids,
                      self.pad_id, self.device, self.cfg.max_batch, self.prefixes if reuse else None,
                      self.ignore_eos)

    @contextmanager
    def stream(self) -> Iterator[GenStream]:
        """Requests answered as they complete; other threads' calls wait until the block ends."""
        with self._lock, torch.inference_mode():
            yield _Stream(self)

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        """Generate `n` samples per request with continuous batching over `max_batch` rows."""
        out: dict[Hashable, list[Generation]] = {}
        with self.stream() as s:
            for i, req in enumerate(reqs):
                s.submit(i, req)
            while done := s.wait():
                out.update(done)
        return [out[i] for i in range(len(reqs))]

    def finish(self, row: Row) -> Generation:
        ids = [t for t in row.out if t not in self.eos_ids] if not self.ignore_eos else row.out
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, hit = truncate_at_stop(text, row.stop)
        text, matched = truncate_at_pattern(text, row.stop_pattern)
        reason = "stop" if hit or matched or row.finish == "stop" else "length"
        return Generation(text=text, prompt_tokens=len(row.ids), completion_tokens=len(row.out),
                          finish_reason=reason)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Cache,
                 keep: int = 1) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True,
                         logits_to_keep=keep)
        return out.logits[:, -1, :].float() if keep == 1 else out.logits.float()

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
        """Log-probability of each continuation after its prompt (see `core.lm.Scorer`)."""
        seqs, starts, shape = [], [], []
        for req in reqs:
            text = self.render(GenRequest(messages=req.messages, assistant_prefix=req.assistant_prefix))
            prompt = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            for cont in req.continuations:
                full = list(self.tokenizer(text + cont, add_special_tokens=False)["input_ids"])
                start = _common_prefix(prompt, full)  # a token may straddle the boundary
                seqs.append(full)
                starts.append(min(start, len(full) - 1))
            shape.append((len(prompt), len(req.continuations)))
        with self._lock, torch.inference_mode():
            engine = self.engine()
            flat: list[float] = []
            for at in range(0, len(seqs), self.cfg.max_batch):
                flat += engine.score(seqs[at : at + self.cfg.max_batch], starts[at : at + self.cfg.max_batch])
        out, at = [], 0
        for prompt_len, n in shape:
            out.append(Scores(logprobs=flat[at : at + n], prompt_tokens=prompt_len,
                              tokens=[len(seqs[k]) - starts[k] for k in range(at, at + n)]))
            at += n
        return out


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


class _Stream:
    """`GenStream` over the backend's engine: rows of submitted requests join the running batch."""

    def __init__(self, backend: HFBackend) -> None:
        self.backend = backend
        self.engine = backend.engine()
        self.rows: dict[Hashable, list[Row]] = {}
        self.left: dict[Hashable, int] = {}

    def submit(self, key: Hashable, req: GenRequest) -> None:
        if key in self.rows:
            raise ValueError(f"request key {key!r} is already in flight")
        rows = self.backend._rows(key, req)
        self.rows[key], self.left[key] = rows, len(rows)
        self.engine.add(rows)

    def wait(self) -> list[tuple[Hashable, list[Generation]]]:
        while self.engine.busy:
            complete = []
            for row in self.engine.step():
                self.left[row.key] -= 1
                if self.left[row.key] == 0:
                    complete.append(row.key)
            if complete:
                return [(key, self._collect(key)) for key in complete]
        return []

    def _collect(self, key: Hashable) -> list[Generation]:
        rows = self.rows.pop(key)
        del self.left[key]
        return [self.backend.finish(r) for r in sorted(rows, key=lambda r: r.sample)]
