"""Key/value caches for the hf backend: the live batch's slot cache and the LRU of prefix caches.

- `BatchCache` holds the keys/values of the rows being decoded in preallocated buffers
  `[rows, heads, width, head_dim]` per layer. A decode step writes one column in place (a growing
  `torch.cat` would copy the whole cache on every token). Rows stay packed at the front of the
  buffer: a finished row's slot is filled with the last live row (one row copied, not the batch);
  a joining row is written right-aligned into the current width, so rows of different lengths share
  one batch with holes on the left, described by the attention mask the engine keeps beside it.
- `PrefixCache` keeps earlier prompts' (and finished rows') keys/values, keyed by token ids, so a
  prompt that extends one seen before only prefills its new tokens. Lookups walk a chain of hashes
  of 16-token blocks (as vLLM's prefix caching does), so a lookup costs O(prompt length), not
  O(entries × length); the last partial block is matched token by token.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from transformers.cache_utils import Cache, DynamicLayer

KV = list[tuple[torch.Tensor, torch.Tensor]]  # per layer: keys, values of shape [1, heads, length, dim]
BLOCK = 16


class SlotLayer(DynamicLayer):
    """One layer's keys/values in a preallocated buffer; `keys`/`values` are views of the live part."""

    def __init__(self) -> None:
        super().__init__()
        self.buf_k: torch.Tensor | None = None
        self.buf_v: torch.Tensor | None = None
        self.rows = 0
        self.width = 0

    def _ensure(self, like: torch.Tensor, rows: int, width: int) -> None:
        """Grow the buffers (doubling) so `rows` × `width` fit; the live part is copied over."""
        if self.buf_k is not None and rows <= self.buf_k.shape[0] and width <= self.buf_k.shape[2]:
            return
        cap_r = max(rows, 2 * self.buf_k.shape[0] if self.buf_k is not None else rows)
        cap_w = max(width, 2 * self.buf_k.shape[2] if self.buf_k is not None else width, 64)
        shape = (cap_r, like.shape[1], cap_w, like.shape[3])
        # Uninitialised: attention reads only the live part [:rows, :, :width], and every cell of it
        # is written before it is read (copied here, joined by `add_rows` with its holes zeroed, or
        # appended by `update`). Zero-filling the spare capacity cost ~10 % of a search's time.
        new_k, new_v = like.new_empty(shape), like.new_empty(shape)
        if self.buf_k is not None and self.rows and self.width:
            new_k[: self.rows, :, : self.width] = self.buf_k[: self.rows, :, : self.width]
            new_v[: self.rows, :, : self.width] = self.buf_v[: self.rows, :, : self.width]  # type: ignore[index]
        self.buf_k, self.buf_v = new_k, new_v
        self.device = like.device
        self.is_initialized = True

    def _views(self) -> None:
        assert self.buf_k is not None and self.buf_v is not None
        self.keys = self.buf_k[: self.rows, :, : self.width]
        self.values = self.buf_v[: self.rows, :, : self.width]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: object,
               **kwargs: object) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `q` new columns for every live row (a decode step or a prefill on this cache)."""
        q = key_states.shape[2]
        self._ensure(key_states, key_states.shape[0], self.width + q)
        self.rows = key_states.shape[0]
        assert self.buf_k is not None and self.buf_v is not None
        self.buf_k[: self.rows, :, self.width : self.width + q] = key_states
        self.buf_v[: self.rows, :, self.width : self.width + q] = value_states
        self.width += q
        self._views()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.width if self.is_initialized else 0


class BatchCache(Cache):
    """The live batch's cache: one `SlotLayer` per model layer, plus row joins, removals and trims."""

    def __init__(self, n_layers: int) -> None:
        super().__init__(layers=[SlotLayer() for _ in range(n_layers)])

    @property
    def slots(self) -> list[SlotLayer]:
        return self.layers  # type: ignore[return-value]

    @property
    def rows(self) -> int:
        return self.slots[0].rows

    @property
    def width(self) -> int:
        return self.slots[0].width

    def add_rows(self, kvs: list[KV], lengths: list[int]) -> int:
        """Append rows whose caches hold `lengths` tokens, right-aligned; returns the left shift (in
        columns) applied to the existing rows when a new row was wider than the batch."""
        need = max(lengths)
        shift = max(0, need - self.width)
        for li, layer in enumerate(self.slots):
            like = kvs[0][li][0]
            layer._ensure(like, layer.rows + len(kvs), layer.width + shift)
            assert layer.buf_k is not None and layer.buf_v is not None
            if shift and layer.rows:  # move existing rows right so the new, longer row fits
                for buf in (layer.buf_k, layer.buf_v):
                    buf[: layer.rows, :, shift : shift + layer.width] = buf[: layer.rows, :, : layer.width].clone()
                    buf[: layer.rows, :, :shift] = 0
            width = layer.width + shift
            for j, (kv, n) in enumerate(zip(kvs, lengths, strict=True)):
                r = layer.rows + j
                layer.buf_k[r, :, : width - n] = 0
                layer.buf_v[r, :, : width - n] = 0
                if n:
                    layer.buf_k[r, :, width - n : width] = kv[li][0][0, :, :n]
                    layer.buf_v[r, :, width - n : width] = kv[li][1][0, :, :n]
            layer.rows += len(kvs)
            layer.width = width
            layer._views()
        return shift

    def remove_rows(self, drop: list[int]) -> list[int]:
        """Remove rows by moving the last live rows into their slots (only the moved rows are copied,
        not the whole batch). Returns the new order as old row indices: row i now holds old row
        `order[i]`."""
        order = list(range(self.rows))
        for i in sorted(set(drop), reverse=True):
            last = len(order) - 1
            if i != last:
                self._copy_row(last, i)
                order[i] = order[last]
            order.pop()
        for layer in self.slots:
            layer.rows = len(order)
            layer._views()
        return order

    def _copy_row(self, src: int, dst: int) -> None:
        for layer in self.slots:
            assert layer.buf_k is not None and layer.buf_v is not None
            layer.buf_k[dst, :, : layer.width] = layer.buf_k[src, :, : layer.width]
            layer.buf_v[dst, :, : layer.width] = layer.buf_v[src, :, : layer.width]

    def trim_left(self, columns: int) -> None:
        """Drop `columns` leftmost columns (holes shared by every row) to shorten attention."""
        if columns <= 0:
            return
        for layer in self.slots:
            assert layer.buf_k is not None and layer.buf_v is not None
            keep = layer.width - columns
            for buf in (layer.buf_k, layer.buf_v):
                buf[: layer.rows, :, :keep] = buf[: layer.rows, :, columns : layer.width].clone()
            layer.width = keep
            layer._views()

    def row_kv(self, row: int, start: int) -> KV:
        """A copy of one row's keys/values from column `start` to the end (its real tokens)."""
        return [(layer.buf_k[row : row + 1, :, start : layer.width].clone(),  # type: ignore[index]
                 layer.buf_v[row : row + 1, :, start : layer.width].clone())  # type: ignore[index]
                for layer in self.slots]


def _chain(ids: list[int]) -> list[int]:
    """Hashes of the prefixes made of whole 16-token blocks: h_k covers ids[: 16 * (k + 1)]."""
    out, h = [], 0
    for k in range(len(ids) // BLOCK):
        h = hash((h, tuple(ids[k * BLOCK : (k + 1) * BLOCK])))
        out.append(h)
    return out


class PrefixCache:
    """An LRU of key/value caches keyed by token ids, bounded by total cached tokens."""

    def __init__(self, capacity_tokens: int) -> None:
        self.capacity = capacity_tokens
        self._entries: OrderedDict[tuple[int, ...], KV] = OrderedDict()
        self._blocks: dict[int, tuple[int, ...]] = {}  # block-chain hash -> newest entry holding it
        self.tokens = 0
        self.hits = 0
        self.reused_tokens = 0

    def clear(self) -> None:
        self._entries.clear()
        self._blocks.clear()
        self.tokens = 0

    def _best(self, ids: list[int]) -> tuple[int, tuple[int, ...] | None]:
        key, matched = None, 0
        for k, h in enumerate(_chain(ids)):
            found = self._blocks.get(h)
            if found is None or found not in self._entries:
                break
            key, matched = found, (k + 1) * BLOCK
        if key is None:  # shorter than a block, or no block in common: try the newest entries directly
            for cand in list(reversed(self._entries))[:8]:
                n = _lcp(cand, ids)
                if n > matched:
                    key, matched = cand, n
            return matched, key
        return _lcp(key, ids, start=matched), key

    def lookup(self, ids: list[int]) -> tuple[int, KV | None]:
        """The longest cached prefix of `ids` (at most len(ids) - 1, so one token is left to run)."""
        matched, key = self._best(ids)
        matched = min(matched, len(ids) - 1)
        if key is None or matched <= 0:
            return 0, None
        self._entries.move_to_end(key)
        self.hits += 1
        self.reused_tokens += matched
        return matched, [(k[:, :, :matched], v[:, :, :matched]) for k, v in self._entries[key]]

    def put(self, ids: list[int], kv: KV) -> None:
        """Store a cache for `ids`; an entry that is a prefix of it is now redundant and dropped."""
        if not ids or len(ids) > self.capacity:
            return
        key = tuple(ids)
        chain = _chain(ids)
        covered = self._blocks.get(chain[-1]) if chain else None
        for old in {covered, *(c for c in list(self._entries)[-8:])}:
            if old is not None and old in self._entries and len(old) <= len(key) and key[: len(old)] == old:
                self._drop(old)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = kv
        self.tokens += len(key)
        for h in chain:
            self._blocks[h] = key
        while self.tokens > self.capacity and self._entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: tuple[int, ...]) -> None:
        del self._entries[key]
        self.tokens -= len(key)
        for h in _chain(list(key)):
            if self._blocks.get(h) == key:
                del self._blocks[h]


def _lcp(a: tuple[int, ...], b: list[int], start: int = 0) -> int:
    """Length of the longest common prefix of two id sequences, known to agree up to `start`."""
    m = min(len(a), len(b))
    i = start
    while i < m and a[i] == b[i]:
        i += 1
    return i
