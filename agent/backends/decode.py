"""Continuous batching for the hf backend: rows join the batch as others finish.

The `Engine` keeps up to `max_batch` rows (samples) decoding together. Each `step()`:
1. admits waiting rows into free slots: their prompts are prefilled (each distinct prompt once, on
   top of its longest cached prefix) and their keys/values written into the batch cache;
2. samples one token for every live row from its last logits (greedy rows with one batched argmax;
   sampled rows with their own seeded generator, so a sample's draws never depend on the batch);
3. retires the rows that hit EOS, a stop string, their stop pattern (the end of an answer line) or
   their token cap
   (a finished row's keys/values go to the prefix cache: a child step or a rollout that continues
   it prefills only its new tokens);
4. runs one forward pass for the rows still live.
A batch therefore stays full while work is waiting, instead of draining to its slowest row.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch
from insightloop.agent.backends.kv import KV, BatchCache, PrefixCache

TAIL = 96  # characters of decoded output kept per row for stop checks


@dataclass
class Row:
    """One sample being decoded."""

    key: Hashable
    sample: int
    ids: list[int]
    generator: torch.Generator | None
    temperature: float
    top_p: float
    max_tokens: int
    stop: tuple[str, ...]
    stop_pattern: str | None = None
    out: list[int] = field(default_factory=list)
    tail: str = ""
    finish: str | None = None


# (ids, attention mask, position ids, cache, last positions to keep) -> logits ([n, vocab] for 1)
Forward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, BatchCache, int], torch.Tensor]


class Engine:
    """Continuous batching over one model (see the module docstring). Not thread-safe."""

    def __init__(self, forward: Forward, n_layers: int, token_text: list[str], eos_ids: set[int],
                 pad_id: int, device: torch.device, max_batch: int, prefixes: PrefixCache | None,
                 ignore_eos: bool = False) -> None:
        self.forward = forward
        self.n_layers = n_layers
        self.token_text = token_text
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.device = device
        self.max_batch = max_batch
        self.prefixes = prefixes
        self.ignore_eos = ignore_eos
        self.waiting: deque[Row] = deque()
        self.live: list[Row] = []
        self.cache = BatchCache(n_layers)
        self.mask = torch.zeros((0, 0), dtype=torch.long, device=device)
        self.pos = torch.zeros(0, dtype=torch.long, device=device)
        self.logits: torch.Tensor | None = None

    @property
    def busy(self) -> bool:
        return bool(self.waiting or self.live)

    def add(self, rows: list[Row]) -> None:
        self.waiting.extend(rows)

    # ---- one step ------------------------------------------------------------------------------

    def step(self) -> list[Row]:
        """Admit, sample, retire, forward; returns the rows that finished in this step."""
        self._admit()
        if not self.live:
            return []
        assert self.logits is not None
        tokens = self._sample(self.logits)
        done = [i for i, (row, tok) in enumerate(zip(self.live, tokens, strict=True)) if self._advance(row, tok)]
        finished = [self.live[i] for i in done]
        if done:
            tokens = [tokens[i] for i in self._retire(done)]
        if self.live:
            self.mask = torch.cat([self.mask, self.mask.new_ones((len(self.live), 1))], dim=1)
            ids = torch.tensor(tokens, device=self.device)[:, None]
            self.logits = self.forward(ids, self.mask, self.pos[:, None], self.cache, 1)
            self.pos = self.pos + 1
        else:
            self.logits = None
        return finished

    # ---- admission -----------------------------------------------------------------------------

    def _admit(self) -> None:
        free = self.max_batch - len(self.live)
        if free <= 0 or not self.waiting:
            return
        rows = [self.waiting.popleft() for _ in range(min(free, len(self.waiting)))]
        distinct: dict[tuple[int, ...], int] = {}
        for r in rows:
            distinct.setdefault(tuple(r.ids), len(distinct))
        prompts = [list(k) for k in distinct]
        kvs, logits = self._prefill(prompts)
        index = [distinct[tuple(r.ids)] for r in rows]
        lengths = [len(prompts[i]) for i in index]
        shift = self.cache.add_rows([kvs[i] for i in index], lengths)
        width = self.cache.width
        if shift:
            self.mask = torch.cat([self.mask.new_zeros((len(self.live), shift)), self.mask], dim=1)
        new_mask = torch.zeros((len(rows), width), dtype=torch.long, device=self.device)
        for j, n in enumerate(lengths):
            new_mask[j, width - n :] = 1
        self.mask = torch.cat([self.mask, new_mask], dim=0) if len(self.live) else new_mask
        new_pos = torch.tensor(lengths, dtype=torch.long, device=self.device)
        self.pos = torch.cat([self.pos, new_pos]) if len(self.live) else new_pos
        new_logits = logits[index]
        self.logits = torch.cat([self.logits, new_logits]) if self.logits is not None and len(self.live) \
            else new_logits
        self.live.extend(rows)

    def score(self, seqs: list[list[int]], starts: list[int]) -> list[float]:
        """Sum of log P(seq[i] | seq[:i]) for i from `starts[k]` on, for each sequence (teacher forcing)."""
        keep = max(len(s) - st for s, st in zip(seqs, starts, strict=True)) + 1
        _, logits = self._prefill(seqs, keep=keep, cache_put=False)
        out = []
        for k, (seq, st) in enumerate(zip(seqs, starts, strict=True)):
            n = len(seq) - st
            rows = logits[k, keep - 1 - n : keep - 1].log_softmax(-1)  # predictions of seq[st:]
            target = torch.tensor(seq[st:], device=rows.device)
            out.append(float(rows.gather(1, target[:, None]).sum()))
        return out

    def _prefill(self, prompts: list[list[int]], keep: int = 1,
                 cache_put: bool = True) -> tuple[list[KV], torch.Tensor]:
        """Run each prompt's uncached suffix on top of its cached prefix; cache the prompts.

        Returns the prompts' caches and the logits of their last `keep` positions ([n, keep, vocab]
        when keep > 1, else [n, vocab]); a cached prefix never covers those positions."""
        use = self.prefixes is not None and self.prefixes.capacity
        hits = [self.prefixes.lookup(p[: len(p) - keep + 1]) if use else (0, None)  # type: ignore[union-attr]
                for p in prompts]
        cached = [n for n, _ in hits]
        cache = BatchCache(self.n_layers)
        width = max(cached)
        cmask = torch.zeros((len(prompts), width), dtype=torch.long, device=self.device)
        if width:
            template = next(kv for _, kv in hits if kv is not None)
            empty: KV = [(k[:, :, :0], v[:, :, :0]) for k, v in template]
            cache.add_rows([kv if kv is not None else empty for _, kv in hits], cached)
            for i, n in enumerate(cached):
                cmask[i, width - n :] = 1
        suffixes = [p[n:] for p, n in zip(prompts, cached, strict=True)]
        ids, smask = self._left_pad(suffixes)
        span = ids.shape[1]
        shift = torch.tensor([n - (span - len(s)) for n, s in zip(cached, suffixes, strict=True)],
                             device=self.device)
        pos = (torch.arange(span, device=self.device)[None, :] + shift[:, None]).clamp(min=0)
        full = torch.cat([cmask, smask], dim=1)
        logits = self.forward(ids, full, pos, cache, keep)
        kvs = []
        for i, p in enumerate(prompts):
            cols = full[i].bool().nonzero().squeeze(-1)
            kv = [(lay.keys[i : i + 1, :, cols], lay.values[i : i + 1, :, cols]) for lay in cache.slots]
            kvs.append(kv)
            if use and cache_put:
                self.prefixes.put(p, kv)  # type: ignore[union-attr]
        return kvs, logits

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            if s:
                ids[i, width - len(s) :] = torch.tensor(s)
                mask[i, width - len(s) :] = 1
        return ids.to(self.device), mask.to(self.device)

    # ---- retiring ------------------------------------------------------------------------------

    def _retire(self, done: list[int]) -> list[int]:
        """Drop finished rows (their caches go to the prefix cache); returns the new row order as old
        row indices."""
        width = self.cache.width
        if self.prefixes is not None and self.prefixes.capacity:
            for i in done:  # the row's real tokens: prompt + generated, minus the last (never forwarded)
                row = self.live[i]
                n = int(self.mask[i].sum())
                self.prefixes.put(row.ids + row.out[:-1], self.cache.row_kv(i, width - n))
        order = self.cache.remove_rows(done)
        index = torch.tensor(order, dtype=torch.long, device=self.device)
        self.live = [self.live[i] for i in order]
        self.mask, self.pos = self.mask[index], self.pos[index]
        if not self.live:  # an empty batch starts over at width 0
            self.cache.trim_left(self.cache.width)
            self.mask = self.mask[:, :0]
            return order
        first = int((self.mask.cumsum(1) == 0).sum(1).min())
        if first >= 32:  # leading columns that every remaining row leaves empty only cost attention
            self.cache.trim_left(first)
            self.mask = self.mask[:, first:]
        return order

    # ---- sampling and stops --------------------------------------------------------------------

    def _sample(self, logits: torch.Tensor) -> list[int]:
        # torch.multinomial per row (~1 ms a row and step): it draws by an exponential race, so logits
        # that differ in the last bits (the same row in batches of other shapes) flip a draw only when
        # two tokens nearly tie. A batched inverse-CDF draw was faster, but a cumulative sum over the
        # 49k vocabulary gathers every token's rounding, and the streaming and lockstep drivers then
        # built different trees (tests/test_solve_real.py).
        out = logits.argmax(-1).tolist()
        for i, row in enumerate(self.live):
            if row.generator is None:
                continue
            probs = torch.softmax(logits[i] / row.temperature, dim=-1)
            if row.top_p < 1.0:
                probs = _top_p(probs, row.top_p)
            out[i] = int(torch.multinomial(probs, 1, generator=row.generator))
        return out

    def _advance(self, row: Row, token: int) -> bool:
        """Append a token; return whether the row is finished."""
        row.out.append(token)
        if token in self.eos_ids and not self.ignore_eos:
            row.finish = "stop"
            return True
        row.tail = (row.tail + self.token_text[token])[-TAIL:]
        if row.stop and any(s and s in row.tail for s in row.stop):
            row.finish = "stop"
        elif row.stop_pattern and re.search(row.stop_pattern, row.tail):
            row.finish = "stop"
        elif len(row.out) >= row.max_tokens:
            row.finish = "length"
        return row.finish is not None


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose mass reaches `top_p` (always the most likely one)."""
    sorted_p, order = probs.sort(descending=True)
    drop = sorted_p.cumsum(-1) - sorted_p > top_p
    sorted_p[drop] = 0.0
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)
