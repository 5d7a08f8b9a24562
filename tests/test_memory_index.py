"""The vector index by size: exact below `hnsw_threshold`, an HNSW graph from it; recall against
exact search, removal by tombstones, persistence, and rebuilding through the store."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from insightloop.core.config import MemoryConfig
from insightloop.core.task import Task
from insightloop.memory import faisslib
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.index import VectorIndex
from insightloop.memory.store import MemoryStore

DIM = 128


def unit_rows(n: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def graph(n: int, threshold: int = 100, **cfg: float) -> tuple[VectorIndex, np.ndarray]:
    """An index past its (low) threshold holding `n` random unit vectors under keys 0..n-1."""
    vecs = unit_rows(n)
    index = VectorIndex(DIM, use_gpu=False, cfg=MemoryConfig(hnsw_threshold=threshold, **cfg))
    index.add(np.arange(n), vecs)
    return index, vecs


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact, strict=True)]))


def test_the_index_switches_to_a_graph_at_the_threshold():
    index = VectorIndex(DIM, use_gpu=False, cfg=MemoryConfig(hnsw_threshold=50))
    vecs = unit_rows(60)
    index.add(np.arange(49), vecs[:49])
    assert index.kind == "exact" and len(index) == 49
    index.add(np.array([49]), vecs[49:50])
    assert index.kind == "hnsw" and len(index) == 50
    assert sorted(index.ids().tolist()) == list(range(50))
    scores, ids = index.search(vecs[:5], 1)
    assert ids[:, 0].tolist() == list(range(5)) and np.allclose(scores[:, 0], 1.0, atol=1e-5)
    no_graph = VectorIndex(DIM, use_gpu=False, cfg=MemoryConfig(hnsw_threshold=50), build_graph=False)
    no_graph.add(np.arange(60), vecs)
    assert no_graph.kind == "exact"


def test_graph_recall_against_exact_search():
    index, vecs = graph(4000)
    exact = VectorIndex(DIM, use_gpu=False)
    exact.add(np.arange(4000), vecs)
    assert index.kind == "hnsw" and exact.kind == "exact"
    queries = unit_rows(200, seed=1)
    _, want = exact.search(queries, 10)
    for threads in (1, 0):  # one query at a time on one thread, and a batch on all
        _, got = index.search(queries, 10, threads=threads)
        assert recall_at(got, want) >= 0.95


def test_removed_keys_never_come_back_and_tombstones_are_dropped():
    index, vecs = graph(1000, hnsw_max_dead=0.2)
    gone = np.arange(0, 1000, 10)  # 10 %: tombstones, under the rebuild fraction
    index.remove(gone)
    assert index.kind == "hnsw" and index.dead == 100 and len(index) == 900
    _, ids = index.search(vecs[gone], 10)
    assert not np.isin(ids, gone).any() and (ids >= 0).all()
    more = np.arange(5, 1000, 10)  # 20 % dead now: past the fraction, rebuilt without them
    index.remove(more)
    assert index.dead == 0 and len(index) == 800 and index.kind == "hnsw"
    _, ids = index.search(vecs[np.r_[gone, more]], 10)
    assert not np.isin(ids, np.r_[gone, more]).any()
    assert set(index.ids().tolist()) == set(range(1000)) - set(gone.tolist()) - set(more.tolist())


def test_upserting_an_unchanged_vector_leaves_no_tombstone():
    index, vecs = graph(300)
    index.upsert(np.arange(50), vecs[:50])
    assert index.dead == 0 and len(index) == 300
    moved = unit_rows(1, seed=7)
    index.upsert(np.array([3]), moved)
    assert index.dead == 1 and len(index) == 300
    assert np.array_equal(index.reconstruct(3), moved[0])
    assert index.search(moved, 1)[1][0, 0] == 3


def test_a_graph_round_trips_through_its_file(tmp_path: Path):
    index, vecs = graph(600)
    index.remove(np.arange(0, 600, 20))
    path = tmp_path / "index.faiss"
    index.save(path, {"version": 7})
    loaded, reason = VectorIndex.load(path, DIM, {"version": 7}, use_gpu=False, cfg=index.cfg)
    assert reason == "loaded" and loaded is not None
    assert loaded.kind == "hnsw" and loaded.dead == index.dead and len(loaded) == len(index)
    queries = unit_rows(50, seed=2)
    assert np.array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
    assert not np.isin(loaded.search(vecs, 5)[1], np.arange(0, 600, 20)).any()
    # A config that raises the threshold above the size turns the graph back into exact search.
    exact, _ = VectorIndex.load(path, DIM, {"version": 7}, use_gpu=False, cfg=MemoryConfig())
    assert exact is not None and exact.kind == "exact" and len(exact) == len(index)
    assert VectorIndex.load(path, DIM, {"version": 8}, use_gpu=False)[1] == "stale"
    # An index that may not build a graph still uses a saved one.
    kept, _ = VectorIndex.load(path, DIM, {"version": 7}, use_gpu=False, cfg=index.cfg, build_graph=False)
    assert kept is not None and kept.kind == "hnsw"


def _open(path: Path, readonly: bool = False) -> MemoryStore:
    # A low threshold puts a dozen insights in a graph; tombstones stay until half the entries are dead.
    cfg = MemoryConfig(hnsw_threshold=8, hnsw_max_dead=0.5, dedup_threshold=0.99)
    return MemoryStore.open(path, HashingEmbedder(), cfg, readonly=readonly, rng=random.Random(0))


WORDS = ["parity", "carry", "units", "sorting", "primes", "fractions", "angles", "negation", "ratios",
         "remainders", "digits", "powers"]


def hits(store: MemoryStore) -> list[tuple[str, float]]:
    """Every insight with its score for one query, in id order (equal scores may come in any order)."""
    return sorted((i.id, round(s, 4)) for i, s in store.search("lesson about primes", len(WORDS)))


def test_the_store_uses_a_graph_past_the_threshold_and_rebuilds_it_when_truncated(tmp_path: Path):
    with _open(tmp_path) as store:
        ids = {w: store.add_insight(f"lesson about {w} in word problems", status="active")[0].id for w in WORDS}
        assert store.indexes.ensure().insights.kind == "hnsw"
        want = hits(store)
        assert store.search("lesson about primes", 1)[0][0].id == ids["primes"]
    index = tmp_path / "index.faiss"
    with _open(tmp_path, readonly=True) as store:
        assert hits(store) == want
        assert store.index_state == "loaded" and store.indexes.ensure().insights.kind == "hnsw"
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with _open(tmp_path, readonly=True) as store:  # a reader rebuilds, but searches exactly
        assert hits(store) == want
        assert store.index_state == "rebuilt (corrupt)" and store.indexes.ensure().insights.kind == "exact"
    with _open(tmp_path) as store:
        assert hits(store) == want
        assert store.index_state == "rebuilt (corrupt)" and store.indexes.ensure().insights.kind == "hnsw"
    with _open(tmp_path) as store:
        assert store.index_state == "not loaded"
        store.search("primes", 1)
        assert store.index_state == "loaded"


def test_rolled_back_and_retired_insights_never_come_back_from_a_graph(tmp_path: Path):
    with _open(tmp_path) as store:
        kept = [store.add_insight(f"lesson about {w} in word problems", status="active")[0] for w in WORDS[:9]]
        version = store.version
        late = [store.add_insight(f"a later lesson on {w} and tables", status="active")[0] for w in WORDS[:3]]
        assert store.indexes.ensure().insights.kind == "hnsw"
        with _open(tmp_path, readonly=True) as reader:
            reader.search("lesson", 1)  # loaded before the rollback: it must catch up with the deletion
            store.rollback(version)
            assert store.indexes.ensure().insights.dead == len(late)
            retired = store.set_status(kept[0].id, "retired", "hurt")
            for s in (store, reader):
                for w in WORDS[:3]:
                    assert not {i.id for i, _ in s.search(f"a later lesson on {w} and tables", 12)} & {
                        i.id for i in late}
                active = {i.id for i, _ in s.search("lesson about parity in word problems", 12, status="active")}
                assert retired.id not in active
        task = Task(id="t", family="f", prompt="lesson about parity in word problems")
        assert retired.id not in {i.id for i in store.retrieve(task, k=12)}


def test_usable_cpus_respects_the_affinity_mask_and_omp_num_threads(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cpus = faisslib.usable_cpus()
    assert 1 <= cpus <= len(__import__("os").sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert faisslib.usable_cpus() == 1
