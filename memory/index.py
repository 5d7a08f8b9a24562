"""The FAISS vector index: `IndexIDMap2(IndexFlatIP)` over unit vectors, so scores are cosines.

The index is derived data. `save` writes it through `core.files.atomic_path` (a temporary file
beside it, fsynced, then `os.replace`d in), then writes a stamp (`<file>.json`: memory version,
embedder, dimension, byte size, CRC32). `load` returns None with a reason when the file is missing,
stale or corrupt, and the caller rebuilds from SQLite.
A GPU copy (faiss-gpu with a visible GPU) is made lazily for searching; mutations go to the CPU
master and drop the GPU copy.
"""

from __future__ import annotations

import json
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from insightloop.core.files import atomic_path, atomic_write

log = logging.getLogger(__name__)
_BLAS_THRESHOLD = 20
_PARALLEL_WORK = 2_000_000  # query rows × indexed vectors above which searching uses all threads


def _faiss() -> Any:
    import faiss

    # Recent faiss builds raised the query count at which flat search switches to BLAS to 128000,
    # which leaves batched searches 10-20x slower than a matrix product; use the classic 20.
    if faiss.cvar.distance_compute_blas_threshold > _BLAS_THRESHOLD:
        faiss.cvar.distance_compute_blas_threshold = _BLAS_THRESHOLD
    return faiss


_threads: dict[str, int] = {}


def _use_threads(n: int) -> None:
    """Set faiss's OpenMP thread count (0: all it started with), calling into OpenMP only on a
    change, since even a no-op change costs about as much as a small search."""
    faiss = _faiss()
    default = _threads.setdefault("default", faiss.omp_get_max_threads())
    want = n or default
    if _threads.get("current") != want:
        faiss.omp_set_num_threads(want)
        _threads["current"] = want


def _gpu_count() -> int:
    faiss = _faiss()
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


class VectorIndex:
    """Exact inner-product search over int64-keyed unit vectors."""

    def __init__(self, dim: int, use_gpu: bool = True) -> None:
        faiss = _faiss()
        self.dim = dim
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._use_gpu = use_gpu
        self._gpu: Any = None
        self._gpu_res: Any = None

    def __len__(self) -> int:
        return int(self._cpu.ntotal)

    def ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self._cpu.id_map).astype(np.int64)

    def _check(self, vecs: np.ndarray) -> np.ndarray:
        vecs = np.ascontiguousarray(vecs, dtype=np.float32).reshape(-1, self.dim)
        return vecs

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Add vectors under ids that are not yet present (see `upsert` otherwise)."""
        if len(ids) == 0:
            return
        self._cpu.add_with_ids(self._check(vecs), np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu = None

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        self._cpu.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
        self._gpu = None

    def upsert(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        self.remove(ids)
        self.add(ids, vecs)

    def reconstruct(self, id_: int) -> np.ndarray:
        return self._cpu.reconstruct(int(id_))

    def _searcher(self) -> Any:
        if not self._use_gpu or len(self) == 0:
            return self._cpu
        if self._gpu is None and _gpu_count() > 0:
            faiss = _faiss()
            try:
                self._gpu_res = self._gpu_res or faiss.StandardGpuResources()
                self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._cpu)
            except (RuntimeError, AttributeError) as e:
                # A GPU build that cannot take this index still searches correctly on the CPU.
                log.warning("faiss GPU copy failed, searching on CPU: %s", e)
                self._use_gpu = False
                return self._cpu
        return self._gpu if self._gpu is not None else self._cpu

    def search(
        self, queries: np.ndarray, k: int, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids) per query row; rows are padded with id -1 when fewer exist.
        `threads` sets the OpenMP threads (default: one for small searches, all for large ones)."""
        queries = self._check(queries)
        k = min(k, len(self))
        if k <= 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        if threads is None:
            # Small searches run on one thread: starting an OpenMP team costs more than the work,
            # and far more on a busy machine where the team's threads wait for cores.
            threads = 0 if len(queries) * len(self) >= _PARALLEL_WORK else 1
        _use_threads(threads)
        return self._searcher().search(queries, k)

    def save(self, path: Path, stamp: dict[str, Any]) -> None:
        """Write the index and its stamp atomically (index first: a crash in between leaves a stamp
        whose size/CRC no longer match, which `load` treats as corrupt)."""
        with atomic_path(path) as tmp:
            _faiss().write_index(self._cpu, str(tmp))
        meta = {
            **stamp,
            "dim": self.dim,
            "count": len(self),
            "bytes": path.stat().st_size,
            "crc32": _crc32(path),
        }
        stamp_path = path.with_name(path.name + ".json")
        atomic_write(stamp_path, json.dumps(meta))

    @classmethod
    def load(
        cls,
        path: Path,
        dim: int,
        stamp: dict[str, Any],
        use_gpu: bool = True,
    ) -> tuple[VectorIndex | None, str]:
        """The saved index if its stamp matches `stamp` and the file is intact, else (None, reason)."""
        stamp_path = path.with_name(path.name + ".json")
        if not path.exists():
            return None, "missing"
        try:
            meta = json.loads(stamp_path.read_text())
        except (OSError, ValueError):
            return None, "corrupt"
        if meta.get("dim") != dim or any(meta.get(k) != v for k, v in stamp.items()):
            return None, "stale"
        if path.stat().st_size != meta.get("bytes") or _crc32(path) != meta.get("crc32"):
            return None, "corrupt"
        try:
            raw = _faiss().read_index(str(path))
        except RuntimeError:
            return None, "corrupt"
        if raw.d != dim or raw.ntotal != meta.get("count"):
            return None, "corrupt"
        index = cls(dim, use_gpu=use_gpu)
        index._cpu = _faiss().downcast_index(raw) if not hasattr(raw, "id_map") else raw
        return index, "loaded"
