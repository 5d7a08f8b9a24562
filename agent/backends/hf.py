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
  expanded to its `n` samples; prompts are also looked up in an LRU of earlier prompts' caches and
  only the tokens after the longest common token prefix are prefilled (the search asks for children
  and rollouts of the same node again and again). Cached prefixes of different lengths are packed
  into one batch with holes in the attention mask and explicit position ids.

Rows are left-padded up to `max_batch` rows per forward; finished rows are dropped from the batch.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

# Idle OpenMP workers spin by default; on a busy CPU (more runnable threads than cores) every
# parallel region then waits for descheduled spinners. Measured on 2 shared cores at load ~13,
# SmolLM2 batch 1 went from 0.5 to 20 tokens/s with passive waiting. Only effective if torch is not
# imported yet; export OMP_WAIT_POLICY to be sure.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from insightloop.core.config import ModelConfig
from insightloop.core.lm import Generation, GenRequest, Message, render_plain, truncate_at_stop
from insightloop.core.models import resolve_policy

log = logging.getLogger(__name__)

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [1, heads, length, dim]


@dataclass
class _Row:
    """One sample being decoded."""

    req: int
    ids: list[int]
    generator: torch.Generator | None
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    out: list[int] = field(default_factory=list)
    finish: str | None = None
    stopped_text: str | None = None


def _sample_seed(seed: int, index: int) -> int:
    """A stable per-sample seed: sample i of a request never depends on n or on other requests."""
    return (seed * 1_000_003 + index * 7_919 + 0x5EED) % (2**63 - 1)


def _lcp(a: torch.Tensor, b: torch.Tensor) -> int:
    """Length of the longest common prefix of two 1-D id tensors."""
    m = min(len(a), len(b))
    diff = (a[:m] != b[:m]).nonzero()
    return m if len(diff) == 0 else int(diff[0])


class PrefixCache:
    """An LRU of prompt key/value caches keyed by token ids, bounded by total cached tokens."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._entries: OrderedDict[tuple[int, ...], tuple[torch.Tensor, KV]] = OrderedDict()
        self.hits = 0
        self.reused_tokens = 0

    @property
    def tokens(self) -> int:
        return sum(len(k) for k in self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def lookup(self, ids: list[int]) -> tuple[int, KV | None]:
        """The longest cached prefix of `ids` (at most len(ids) - 1, so one token is left to run)."""
        query = torch.tensor(ids)
        best, best_key = 0, None
        for key, (tensor, _) in self._entries.items():
            n = _lcp(tensor, query)
            if n > best:
                best, best_key = n, key
        best = min(best, len(ids) - 1)
        if best_key is None or best <= 0:
            return 0, None
        self._entries.move_to_end(best_key)
        self.hits += 1
        self.reused_tokens += best
        kv = self._entries[best_key][1]
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in kv]

    def put(self, ids: list[int], kv: KV) -> None:
        """Store a prompt's cache; entries that are prefixes of it are now redundant and dropped."""
        if len(ids) > self.capacity:
            return
        key = tuple(ids)
        for old in [k for k in self._entries if len(k) <= len(key) and key[: len(k)] == k]:
            del self._entries[old]
        self._entries[key] = (torch.tensor(ids), kv)
        while self.tokens > self.capacity:
            self._entries.popitem(last=False)


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
        self._lock = threading.Lock()  # one model, one KV cache: callers on several threads take turns
        self._load(self.model_path, tokenizer=True)

    # ---- loading -------------------------------------------------------------------------------

    def _load(self, path: str, tokenizer: bool) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        # Load both before assigning either, so a bad folder leaves the serving model intact.
        tok = AutoTokenizer.from_pretrained(path) if tokenizer else self.tokenizer
        model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        self.tokenizer, self.model = tok, model.to(self.device).eval()
        self.prefixes.clear()  # cached keys/values belong to the old weights
        self._surgery = self._cache_is_plain()
        eos = self.model.generation_config.eos_token_id
        eos_ids = {eos} if isinstance(eos, int) else set(eos or [])
        if self.tokenizer.eos_token_id is not None:
            eos_ids.add(self.tokenizer.eos_token_id)
        self.eos_ids = eos_ids
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(eos_ids)

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

            merged = PeftModel.from_pretrained(self.model, str(folder)).merge_and_unload()
            self.model = merged.to(self.device).eval()
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

    def _rows(self, reqs: list[GenRequest]) -> list[_Row]:
        rows = []
        for i, req in enumerate(reqs):
            ids = self.encode(req)
            seed = req.seed if req.seed is not None else self.rng.getrandbits(62)
            for j in range(req.n):
                gen = None
                if req.temperature > 0:
                    gen = torch.Generator(device=self.device).manual_seed(_sample_seed(seed, j))
                rows.append(_Row(i, ids, gen, req.temperature, req.top_p, req.max_tokens, req.stop))
        return rows

    # ---- generation ----------------------------------------------------------------------------

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        """Generate `n` samples per request, `max_batch` rows per forward pass."""
        step = self.cfg.max_batch
        with self._lock, torch.inference_mode():
            rows = self._rows(reqs)
            for start in range(0, len(rows), step):
                self._run(rows[start : start + step])
        out: list[list[Generation]] = [[] for _ in reqs]
        for row in rows:
            out[row.req].append(self._finish(row))
        return out

    def _finish(self, row: _Row) -> Generation:
        ids = [t for t in row.out if t not in self.eos_ids] if not self.ignore_eos else row.out
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        text, hit = truncate_at_stop(text, row.stop)
        reason = "stop" if hit or row.finish == "stop" else "length"
        return Generation(text=text, prompt_tokens=len(row.ids), completion_tokens=len(row.out),
                          finish_reason=reason)

    def _run(self, rows: list[_Row]) -> None:
        if self.cfg.prefix_reuse and self._surgery:
            cache, mask, logits, pos = self._prefill_shared(rows)
        else:
            cache, mask, logits, pos = self._prefill_rows(rows)
        self._decode(rows, cache, mask, logits, pos)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor,
                 cache: object) -> torch.Tensor:
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache,
                         use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :].float()

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    def _prefill_rows(self, rows: list[_Row]) -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor]:
        """No reuse: every row's whole prompt goes through the model."""
        from transformers import DynamicCache

        ids, mask = self._left_pad([r.ids for r in rows])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        logits = self._forward(ids, mask, pos, cache)
        return cache, mask, logits, mask.sum(-1)

    def _prefill_shared(self, rows: list[_Row]) -> tuple[object, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Prefill each distinct prompt once (after its longest cached prefix), then expand to rows."""
        distinct: dict[tuple[int, ...], int] = {}
        for r in rows:
            distinct.setdefault(tuple(r.ids), len(distinct))
        prompts = [list(k) for k in distinct]
        kvs, logits = self._prefill_prompts(prompts)
        index = [distinct[tuple(r.ids)] for r in rows]
        cache, mask = self._stack([kvs[i] for i in index], [len(prompts[i]) for i in index])
        return cache, mask, logits[index], mask.sum(-1)

    def _prefill_prompts(self, prompts: list[list[int]]) -> tuple[list[KV], torch.Tensor]:
        """Run the uncached suffix of each prompt on top of its cached prefix; store the results."""
        hits = [self.prefixes.lookup(p) if self.prefixes.capacity else (0, None) for p in prompts]
        cached = [n for n, _ in hits]
        cache, cmask = self._stack([kv for _, kv in hits], cached)
        suffixes = [p[n:] for p, n in zip(prompts, cached, strict=True)]
        ids, smask = self._left_pad(suffixes)
        width = ids.shape[1]
        shift = [n - (width - len(s)) for n, s in zip(cached, suffixes, strict=True)]
        offsets = torch.tensor(shift, device=self.device)
        pos = (torch.arange(width, device=self.device)[None, :] + offsets[:, None]).clamp(min=0)
        logits = self._forward(ids, torch.cat([cmask, smask], dim=1), pos, cache)
        keep = torch.cat([cmask, smask], dim=1).bool()
        kvs: list[KV] = []
        for i, p in enumerate(prompts):
            cols = keep[i].nonzero().squeeze(-1)
            kv = [(lay.keys[i : i + 1, :, cols], lay.values[i : i + 1, :, cols]) for lay in cache.layers]
            kvs.append(kv)
            self.prefixes.put(p, kv)
        return kvs, logits

    def _stack(self, kvs: list[KV | None], lengths: list[int]) -> tuple[object, torch.Tensor]:
        """Left-pad per-prompt caches into one batch cache, with its attention mask."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        width = max(lengths)
        mask = torch.zeros((len(lengths), width), dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            mask[i, width - n :] = 1 if n else 0
        if width == 0:
            return cache, mask
        template = next(kv for kv in kvs if kv is not None)
        for layer, (k0, v0) in enumerate(template):
            keys = k0.new_zeros((len(kvs), k0.shape[1], width, k0.shape[3]))
            values = v0.new_zeros((len(kvs), v0.shape[1], width, v0.shape[3]))
            for i, kv in enumerate(kvs):
                if kv is not None and lengths[i]:
                    keys[i, :, width - lengths[i] :] = kv[layer][0][0]
                    values[i, :, width - lengths[i] :] = kv[layer][1][0]
            cache.update(keys, values, layer)
        return cache, mask

    def _decode(self, rows: list[_Row], cache: object, mask: torch.Tensor, logits: torch.Tensor,
                pos: torch.Tensor) -> None:
        """Sample token by token; drop finished rows from the batch as they finish."""
        live = list(range(len(rows)))
        while True:
            tokens = self._sample([rows[i] for i in live], logits)
            keep = [k for k, i in enumerate(live) if not self._advance(rows[i], tokens[k])]
            if not keep:
                return
            if len(keep) < len(live):
                sel = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(sel)
                mask, pos, tokens = mask[sel], pos[sel], [tokens[k] for k in keep]
                live = [live[k] for k in keep]
            mask = torch.cat([mask, mask.new_ones((len(live), 1))], dim=1)
            ids = torch.tensor(tokens, device=self.device)[:, None]
            logits = self._forward(ids, mask, pos[:, None], cache)
            pos = pos + 1

    def _advance(self, row: _Row, token: int) -> bool:
        """Append a token; return whether the row is finished."""
        row.out.append(token)
        if token in self.eos_ids and not self.ignore_eos:
            row.finish = "stop"
        elif row.stop and self._hit_stop(row):
            row.finish = "stop"
        elif len(row.out) >= row.max_tokens:
            row.finish = "length"
        return row.finish is not None

    def _hit_stop(self, row: _Row) -> bool:
        # Stop strings may span tokens: look at a decoded tail long enough to hold the longest one.
        longest = max(len(s) for s in row.stop)
        tail = self.tokenizer.decode(row.out[-(longest + 8) :], skip_special_tokens=True)
        return any(s and s in tail for s in row.stop)

    def _sample(self, rows: list[_Row], logits: torch.Tensor) -> list[int]:
        out = []
        for row, lg in zip(rows, logits, strict=True):
            if row.generator is None:
                out.append(int(lg.argmax()))
                continue
            probs = torch.softmax(lg / row.temperature, dim=-1)
            if row.top_p < 1.0:
                probs = _top_p(probs, row.top_p)
            out.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return out


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose mass reaches `top_p` (always the most likely one)."""
    sorted_p, order = probs.sort(descending=True)
    drop = sorted_p.cumsum(-1) - sorted_p > top_p
    sorted_p[drop] = 0.0
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)
