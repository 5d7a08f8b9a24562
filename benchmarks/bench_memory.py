"""Memory benchmark: FAISS index vs a brute-force numpy baseline at 1k, 10k and 100k insights.

Random unit vectors of MiniLM's dimension (384) isolate the index from the embedder. For each
size it prints batched add throughput, single-add latency, top-k query latency (one query at a
time, p50 and p95), batched query throughput, the FAISS/numpy ratios (>1: FAISS is faster), the
memory the index holds (RSS growth) and whether both return the same top-k. Then one line for the
whole store (SQLite + events + dedup + index) with a hashing embedder, and one line of real MiniLM
encode throughput. Usage: `python benchmarks/bench_memory.py [--sizes 1000,10000] [--no-encoder]`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DIM = 384
K = 10


def rss_mb() -> float:
    """Current resident set size in MB (Linux /proc; the peak elsewhere)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class NumpyIndex:
    """The baseline: a growing matrix, exact top-k by one matrix product and argpartition."""

    def __init__(self) -> None:
        self._data = np.empty((1024, DIM), dtype=np.float32)
        self._ids = np.empty(1024, dtype=np.int64)
        self.n = 0

    def add(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        need = self.n + len(vecs)
        if need > len(self._data):
            size = max(need, 2 * len(self._data))
            self._data = np.resize(self._data, (size, DIM))
            self._ids = np.resize(self._ids, size)
        self._data[self.n : need] = vecs
        self._ids[self.n : need] = ids
        self.n = need

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = queries @ self._data[: self.n].T
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-part, axis=1)
        return np.take_along_axis(part, order, axis=1), self._ids[np.take_along_axis(top, order, axis=1)]


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _latencies(search: Callable[[np.ndarray, int], object], queries: np.ndarray) -> list[float]:
    return [_timed(lambda q=q: search(q.reshape(1, -1), K)) * 1000 for q in queries]


def _build(index: object, vecs: np.ndarray, batch: int = 1000) -> float:
    ids = np.arange(len(vecs), dtype=np.int64)
    return _timed(
        lambda: [
            index.add(ids[i : i + batch], vecs[i : i + batch])  # type: ignore[attr-defined]
            for i in range(0, len(vecs), batch)
        ]
    )


def bench_size(n: int, n_queries: int, rng: np.random.Generator) -> dict[str, float]:
    from insightloop.memory.index import VectorIndex

    vecs, queries = unit_rows(rng, n), unit_rows(rng, n_queries)
    before = rss_mb()
    fx = VectorIndex(DIM, use_gpu=False)
    out = {"n": n, "faiss_add_s": n / _build(fx, vecs)}
    out["faiss_rss_mb"] = rss_mb() - before
    before = rss_mb()
    nx = NumpyIndex()
    out["numpy_add_s"] = n / _build(nx, vecs)
    out["numpy_rss_mb"] = rss_mb() - before
    extra = unit_rows(rng, 200)
    out["faiss_add1_us"] = (
        statistics.mean(_timed(lambda i=i: fx.add(np.array([n + i]), extra[i : i + 1])) for i in range(200))
        * 1e6
    )
    out["numpy_add1_us"] = (
        statistics.mean(_timed(lambda i=i: nx.add(np.array([n + i]), extra[i : i + 1])) for i in range(200))
        * 1e6
    )
    for name, index in (("faiss", fx), ("numpy", nx)):
        lat = sorted(_latencies(index.search, queries))
        out[f"{name}_p50_ms"] = lat[len(lat) // 2]
        out[f"{name}_p95_ms"] = lat[int(len(lat) * 0.95)]
        out[f"{name}_batch_qps"] = n_queries / _timed(lambda index=index: index.search(queries, K))
    out["faiss1_batch_qps"] = n_queries / _timed(lambda: fx.search(queries, K, threads=1))
    _, f_ids = fx.search(queries, K)
    _, n_ids = nx.search(queries, K)
    out["same_topk"] = float(np.mean([set(a) == set(b) for a, b in zip(f_ids, n_ids, strict=True)]))
    return out


def bench_store(n: int) -> dict[str, float]:
    """End to end through MemoryStore (SQLite WAL, an event per add, dedup search, index upkeep)."""
    from insightloop.core.config import MemoryConfig
    from insightloop.core.task import Task
    from insightloop.memory.embed import HashingEmbedder
    from insightloop.memory.store import MemoryStore

    words = [f"w{i}" for i in range(2000)]
    rng = np.random.default_rng(1)
    texts = [" ".join(rng.choice(words, 8)) for _ in range(n)]
    with (
        tempfile.TemporaryDirectory() as tmp,
        MemoryStore.open(tmp, HashingEmbedder(DIM), MemoryConfig()) as store,
    ):
        add_s = _timed(lambda: [store.add_insight(t, status="active") for t in texts])
        tasks = [Task(id=f"t{i}", family="f", prompt=texts[i]) for i in range(50)]
        store.credit([i.id for i in store.list_insights(limit=5)], tasks[0], 1.0, 0.0, "e")
        retrieve_ms = (
            statistics.median(_timed(lambda t=t: store.retrieve(t, train=True)) for t in tasks) * 1000
        )
    return {"n": n, "adds_per_s": n / add_s, "retrieve_ms": retrieve_ms}


def bench_encoder(n: int = 256) -> float:
    from insightloop.core.models import embedded_embedder_path
    from insightloop.memory.embed import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(str(embedded_embedder_path()))
    emb.encode(["warm up the model"])
    texts = [f"Insight number {i}: check the {i % 9} boundary cases before answering." for i in range(n)]
    return n / _timed(lambda: emb.encode(texts))


def _row(r: dict[str, float]) -> str:
    add_ratio = r["faiss_add_s"] / r["numpy_add_s"]
    p50_ratio = r["numpy_p50_ms"] / r["faiss_p50_ms"]
    batch_ratio = max(r["faiss_batch_qps"], r["faiss1_batch_qps"]) / r["numpy_batch_qps"]
    return (
        f"{r['n']:>7} | {r['faiss_add_s']:>11.0f} {r['numpy_add_s']:>10.0f} {add_ratio:>6.2f} | "
        f"{r['faiss_add1_us']:>9.1f} {r['numpy_add1_us']:>6.1f} | "
        f"{r['faiss_p50_ms']:>8.3f} {r['numpy_p50_ms']:>6.3f} {p50_ratio:>6.2f} | "
        f"{r['faiss_p95_ms']:>8.3f} {r['numpy_p95_ms']:>6.3f} | "
        f"{r['faiss_batch_qps']:>11.0f} {r['faiss1_batch_qps']:>8.0f} {r['numpy_batch_qps']:>8.0f} "
        f"{batch_ratio:>6.2f} | "
        f"{r['faiss_rss_mb']:>8.1f} {r['numpy_rss_mb']:>6.1f} | {r['same_topk']:.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--store-size", type=int, default=1000)
    p.add_argument("--no-encoder", action="store_true")
    a = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"index benchmark: dim {DIM}, top-{K}, {a.queries} queries; ratio = numpy time / faiss time")
    print(
        f"{'n':>7} | {'add/s faiss':>11} {'numpy':>10} {'ratio':>6} | {'add1 µs f':>9} {'numpy':>6} | "
        f"{'p50 ms f':>8} {'numpy':>6} {'ratio':>6} | {'p95 ms f':>8} {'numpy':>6} | "
        f"{'batch q/s f':>11} {'f 1-thr':>8} {'numpy':>8} {'ratio':>6} | "
        f"{'RSS MB f':>8} {'numpy':>6} | same top-k"
    )
    for n in (int(s) for s in a.sizes.split(",")):
        print(_row(bench_size(n, a.queries, rng)))
    s = bench_store(a.store_size)
    print(
        f"store (SQLite + events + dedup + index, hashing embedder): {s['adds_per_s']:.0f} add_insight/s "
        f"over {s['n']} insights; retrieve (train) median {s['retrieve_ms']:.2f} ms"
    )
    if not a.no_encoder:
        print(f"MiniLM encode (batch 256, CPU): {bench_encoder():.0f} texts/s")
    print(f"process RSS at the end: {rss_mb():.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
