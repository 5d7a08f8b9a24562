"""The FAISS vector index of a memory: exact search while small, an HNSW graph once large.

Both kinds are an `IndexIDMap2` (int64 keys over positions) of unit vectors, so scores are cosines:

- exact (`IndexFlatIP`) below `cfg.hnsw_threshold` vectors: every query scans every vector, which
  costs ~0.1 ms at 1k but ~15 ms at 100k (one thread);
- hnsw (`IndexHNSWFlat`, inner product; `cfg.hnsw_m` links per vector, `cfg.hnsw_ef_construction`,
  `cfg.hnsw_ef_search`) from the threshold on: a query walks a graph, ~1.4 ms at 100k for
  recall@10 ≈ 0.995 against exact search (`benchmarks/bench_memory.py`). Chosen over IVF, which
  at 100k took ~20 % more time per query for lower recall (nprobe 64: 0.59 ms, 0.955; the graph at
  efSearch 128: 0.48 ms, 0.972), and whose centroids, trained once, drift as the memory grows; IVF
  builds faster (9 s against 19 s at 100k) and can delete, which the graph cannot (see below).

An exact index that grows to the threshold is rebuilt as a graph in place (once). On load and when
tombstones are dropped, the kind follows the size. An index with `build_graph` False never builds a
graph (a reader's, which could not save it and would pay for it on every open; the task and attempt
catalogs, rebuilt on every open): it searches exactly at any size, but uses a saved graph it loads.

Removal: a graph cannot drop a vector. A removed key's position stays in the graph as a tombstone
(its key in the id map set to -1), which queries walk through but a selector keeps out of results,
so a removed key never comes back. Once tombstones reach `cfg.hnsw_max_dead` of the entries the
index is rebuilt from the live vectors. Upserting an unchanged vector (a credit or status change
touches the row, not the text) leaves the index alone.

GPU: with faiss-gpu and a visible GPU the exact index is copied to the GPU lazily for searching;
mutations go to the CPU master and drop the copy. faiss-gpu has no HNSW: a graph stays on the CPU.

Threads: one query runs on one OpenMP thread (starting a team costs more than the work, and far more
on a busy machine); builds and large batches use `cfg.index_threads` (0: the usable CPUs).
The file format (stamp, atomic write, checks) is in `memory.index_file`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from insightloop.core.config import MemoryConfig
from insightloop.memory import index_file
from insightloop.memory.faisslib import faiss, gpu_count, usable_cpus, use_threads

log = logging.getLogger(__name__)
Kind = Literal["exact", "hnsw"]
_PARALLEL_WORK = 2_000_000  # exact: query rows × indexed vectors above which a search uses all threads
_PARALLEL_QUERIES = 16  # hnsw: query rows from which a search uses all threads (each costs ~ef·M dot products)
_PARALLEL_ADD = 256  # hnsw: vectors from which an insertion uses all threads
_CHUNK = 65_536  # vectors moved at a time when rebuilding (bounds the extra memory)
_LIVE_KEYS = (0, np.iinfo(np.int64).max)  # tombstones carry key -1


class VectorIndex:
    """Inner-product search over int64-keyed unit vectors, exact or HNSW by size; `build_graph`
    False: never builds a graph, only uses a loaded one (see the module docstring)."""

    def __init__(
        self, dim: int, use_gpu: bool = True, cfg: MemoryConfig | None = None, build_graph: bool = True
    ) -> None:
        self.dim = dim
        self.cfg = cfg or MemoryConfig()
        self.build_graph = build_graph
        self._use_gpu = use_gpu
        self._gpu: Any = None
        self._gpu_res: Any = None
        self._live: Any = None
        self.kind: Kind = "exact"
        self._raw = self._new("exact")
        self._dead = 0

    # ---- state -------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live vectors (tombstones excluded)."""
        return int(self._raw.ntotal) - self._dead

    @property
    def dead(self) -> int:
        """Tombstones still in the graph (always 0 for an exact index)."""
        return self._dead

    def memory_bytes(self) -> int:
        """Bytes held by vectors, graph links and keys (the key-to-position hash map not counted)."""
        size = int(self._raw.ntotal) * (4 * self.dim + 8)
        if self.kind == "hnsw":
            graph = faiss().downcast_index(self._raw.index).hnsw
            size += 4 * graph.neighbors.size() + 8 * graph.offsets.size() + 4 * graph.levels.size()
        return size

    def ids(self) -> np.ndarray:
        keys = self._keys()
        return keys[keys >= 0]

    def reconstruct(self, id_: int) -> np.ndarray:
        return self._raw.reconstruct(int(id_))

    def _keys(self) -> np.ndarray:
        return faiss().vector_to_array(self._raw.id_map).astype(np.int64)

    def _check(self, vecs: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)

    def _threshold(self) -> float:
        return self.cfg.hnsw_threshold if self.build_graph else math.inf

    def _all_threads(self) -> int:
        return self.cfg.index_threads or usable_cpus()

    def _new(self, kind: Kind) -> Any:
        lib = faiss()
        if kind == "exact":
            return lib.IndexIDMap2(lib.IndexFlatIP(self.dim))
        graph = lib.IndexHNSWFlat(self.dim, self.cfg.hnsw_m, lib.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.cfg.hnsw_ef_construction
        graph.hnsw.efSearch = self.cfg.hnsw_ef_search
        return lib.IndexIDMap2(graph)

    # ---- changes -----------------------------------------------------------------------------
    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add vectors under keys that are not yet present (see `upsert` otherwise)."""
        if len(ids) == 0:
            return
        vecs, keys = self._check(vecs), np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind == "exact" and len(self) + len(keys) >= self._threshold():
            self._rebuild("hnsw")
        big = self.kind == "hnsw" and len(keys) >= _PARALLEL_ADD
        use_threads(self._all_threads() if big else 1)
        self._raw.add_with_ids(vecs, keys)
        self._gpu = None

    def remove(self, ids: np.ndarray) -> None:
        """Drop these keys (absent ones are ignored)."""
        if len(ids) == 0:
            return
        keys = np.ascontiguousarray(ids, dtype=np.int64)
        if self.kind == "exact":
            self._raw.remove_ids(keys)
        else:
            self._bury(keys)
        self._gpu = None

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Put these vectors under these keys: new keys are added, changed vectors replaced, and
        unchanged ones left alone (no tombstone, no O(n) compaction of a flat index)."""
        if len(ids) == 0:
            return
        keys, vecs = np.ascontiguousarray(ids, dtype=np.int64), self._check(vecs)
        changed = np.array([not self._holds(k, v) for k, v in zip(keys, vecs, strict=True)], dtype=bool)
        if changed.any():
            self.remove(keys[changed])
            self.add(keys[changed], vecs[changed])

    def _holds(self, key: np.int64, vec: np.ndarray) -> bool:
        """Whether `key` is present with exactly this vector."""
        try:
            return bool(np.array_equal(self._raw.reconstruct(int(key)), vec))
        except RuntimeError:  # faiss raises for a key it does not hold
            return False

    def _bury(self, keys: np.ndarray) -> None:
        """Tombstone these keys in the graph; rebuild without tombstones at `cfg.hnsw_max_dead`."""
        current = self._keys()
        hit = np.isin(current, keys) & (current >= 0)
        if not hit.any():
            return
        current[hit] = -1
        faiss().copy_array_to_vector(current, self._raw.id_map)
        self._raw.construct_rev_map()
        self._dead += int(hit.sum())
        if self._dead >= self.cfg.hnsw_max_dead * self._raw.ntotal:
            self._rebuild(self._fitting_kind())

    def _fitting_kind(self) -> Kind:
        return "hnsw" if len(self) >= self._threshold() else "exact"

    def _rebuild(self, kind: Kind) -> None:
        """Re-create the index as `kind` from its live vectors, a chunk at a time."""
        old, keys = self._raw, self._keys()
        was = (self.kind, int(old.ntotal), self._dead)
        self._raw, self.kind, self._dead, self._gpu = self._new(kind), kind, 0, None
        use_threads(self._all_threads())
        for start in range(0, len(keys), _CHUNK):
            part = keys[start : start + _CHUNK]
            live = part >= 0
            if live.any():
                vecs = old.index.reconstruct_n(start, len(part))[live]
                self._raw.add_with_ids(np.ascontiguousarray(vecs), np.ascontiguousarray(part[live]))
        log.info("vector index: %s of %d entries (%d dead) rebuilt as %s of %d", *was, kind, len(self))

    # ---- search ------------------------------------------------------------------------------
    def _searcher(self) -> Any:
        if self.kind != "exact" or not self._use_gpu or len(self) == 0:
            return self._raw
        if self._gpu is None and gpu_count() > 0:
            lib = faiss()
            try:
                self._gpu_res = self._gpu_res or lib.StandardGpuResources()
                self._gpu = lib.index_cpu_to_gpu(self._gpu_res, 0, self._raw)
            except (RuntimeError, AttributeError) as e:
                # A GPU build that cannot take this index still searches correctly on the CPU.
                log.warning("faiss GPU copy failed, searching on CPU: %s", e)
                self._use_gpu = False
                return self._raw
        return self._gpu if self._gpu is not None else self._raw

    def _params(self, k: int) -> Any:
        """HNSW search parameters: a candidate list of at least k, and tombstones kept out."""
        lib = faiss()
        params = lib.SearchParametersHNSW()
        params.efSearch = max(self.cfg.hnsw_ef_search, k)
        if self._dead:
            # Kept on self: the parameters hold a bare pointer to the selector.
            self._live = self._live or lib.IDSelectorRange(*_LIVE_KEYS)
            params.sel = self._live
        return params

    def search(
        self, queries: np.ndarray, k: int, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; rows are padded with id -1 when fewer exist.
        `threads` sets the OpenMP threads (0: all; default: one for small searches, all for large)."""
        queries = self._check(queries)
        k = min(k, len(self))
        if k <= 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if threads is None:
            big = (
                len(queries) * len(self) >= _PARALLEL_WORK
                if self.kind == "exact"
                else len(queries) >= _PARALLEL_QUERIES
            )
            threads = 0 if big else 1
        use_threads(threads or self._all_threads())
        if self.kind == "exact":
            return self._searcher().search(queries, k)
        return self._raw.search(queries, k, params=self._params(k))

    # ---- file --------------------------------------------------------------------------------
    def save(self, path: Path, stamp: dict[str, Any]) -> None:
        """Write the index and its stamp atomically (see `memory.index_file`)."""
        index_file.write(self._raw, path, {**stamp, "dim": self.dim, "kind": self.kind, "live": len(self)})

    @classmethod
    def load(
        cls,
        path: Path,
        dim: int,
        stamp: dict[str, Any],
        use_gpu: bool = True,
        cfg: MemoryConfig | None = None,
        build_graph: bool = True,
    ) -> tuple[VectorIndex | None, str]:
        """The saved index if its stamp matches `stamp` and the file is intact, else (None, reason).
        A saved index whose kind no longer fits its size or the config is converted (a saved graph
        at or above the threshold is kept even when `build_graph` is False)."""
        raw, reason = index_file.read(path, dim, stamp)
        if raw is None:
            return None, reason
        index = cls(dim, use_gpu=use_gpu, cfg=cfg, build_graph=build_graph)
        index._adopt(raw)
        return index, "loaded"

    def _adopt(self, raw: Any) -> None:
        lib = faiss()
        inner = lib.downcast_index(raw.index)
        self._raw, self.kind = raw, "hnsw" if isinstance(inner, lib.IndexHNSW) else "exact"
        if self.kind == "hnsw":
            inner.hnsw.efSearch = self.cfg.hnsw_ef_search
            self._dead = int(np.count_nonzero(self._keys() < 0))
        kept = self.kind == "hnsw" and len(self) >= self.cfg.hnsw_threshold
        if not kept and self.kind != self._fitting_kind():
            self._rebuild(self._fitting_kind())
