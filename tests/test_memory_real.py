"""The memory on the real embedder (MiniLM) and real FAISS: semantic retrieval among hundreds of
insights, index rebuilds, concurrent reading, and a writer killed with SIGKILL mid-batch."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from insightloop.core.config import MemoryConfig
from insightloop.core.models import embedded_embedder_path
from insightloop.core.task import Task
from insightloop.memory.embed import SentenceTransformerEmbedder
from insightloop.memory.store import MemoryStore

pytestmark = pytest.mark.real

TARGETS = {
    "weekday": (
        "To find a weekday far ahead, count the days forward modulo seven from a known day.",
        "If today is Tuesday, what day of the week will it be 100 days from now?",
    ),
    "boolean": (
        "In boolean expressions evaluate not first, then and, then or.",
        "Is this True or False: not True and False or True?",
    ),
    "units": (
        "Convert every length to the same unit, such as centimeters, before adding them.",
        "A rope is 3 meters long and another one is 250 centimeters. How long are they together?",
    ),
    "percent": (
        "For a percentage increase multiply the amount by one plus the rate.",
        "A jacket costs 80 dollars and its price rises by 15 percent. What is the new price?",
    ),
    "alphabetical": (
        "To sort words alphabetically compare first letters and use later letters only to break ties.",
        "Sort these words in dictionary order: banana apple cherry avocado.",
    ),
    "game24": (
        "In the 24 game build factors of 24, such as 3 times 8 or 4 times 6, from the numbers.",
        "Use 2, 3, 4 and 6 once each with + - * / to make 24.",
    ),
    "triangle": (
        "The area of a triangle is half the base times the height.",
        "A triangle has a base of 10 cm and a height of 7 cm. What is its area?",
    ),
    "coins": (
        "The chance that independent events all happen is the product of their probabilities.",
        "A fair coin is tossed three times. What is the probability of three heads?",
    ),
}
SUBJECTS = [
    "a cake recipe",
    "a love poem",
    "a tennis serve",
    "a vegetable garden",
    "a cover letter",
    "a guitar solo",
    "a hiking trip",
    "a watercolor painting",
    "a yoga routine",
    "a wedding speech",
    "a birdhouse",
    "a podcast episode",
    "a marathon plan",
    "a knitting pattern",
    "a job interview",
]
ACTIONS = ["Practice", "Rehearse", "Plan", "Prepare", "Polish"]
TAILS = ["slowly over several days", "with a friend watching", "before the weekend", "early in the morning"]


def _distractors() -> list[str]:
    return [f"{a} {s} {t}." for s, a, t in itertools.product(SUBJECTS, ACTIONS, TAILS)]


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(str(embedded_embedder_path()))


@pytest.fixture(scope="module")
def filled(tmp_path_factory, embedder) -> tuple[Path, dict[str, str]]:
    run_dir = tmp_path_factory.mktemp("real_memory")
    texts = _distractors()
    embedder.encode(texts + [t for t, _ in TARGETS.values()])  # one batch; adds then hit the cache
    ids = {}
    with MemoryStore.open(run_dir, embedder, MemoryConfig()) as store:
        for text in texts[:150]:
            store.add_insight(text, status="active")
        for name, (text, _) in TARGETS.items():
            ids[name] = store.add_insight(text, status="active")[0].id
        for text in texts[150:]:
            store.add_insight(text, status="active")
        assert len(store.list_insights()) >= 200  # some distractors merge as near-duplicates
    return run_dir, ids


def test_embedder_rows_are_unit_norm_and_cached(embedder):
    vecs = embedder.encode(["alpha beta", "gamma", "alpha beta"])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(vecs[0], vecs[2]) and "alpha beta" in embedder._cache


def test_semantic_retrieval_among_hundreds(filled, embedder):
    run_dir, ids = filled
    with MemoryStore.open(run_dir, embedder, MemoryConfig(), readonly=True) as store:
        top1 = 0
        for name, (_, prompt) in TARGETS.items():
            hits = [i.id for i, _ in store.search(prompt, 3)]
            assert ids[name] in hits, (name, [store.get(h).text for h in hits])
            got = store.retrieve(Task(id=f"q-{name}", family=name, prompt=prompt), k=1, token_budget=0)
            top1 += bool(got) and got[0].id == ids[name]
        assert top1 == len(TARGETS)


def test_retrieval_uses_credit_on_similar_problems(tmp_path, embedder):
    with MemoryStore.open(tmp_path, embedder, MemoryConfig(top_k=3)) as store:
        generic, _ = store.add_insight(
            "Write the equation first, then compute it step by step.", status="active"
        )
        for text in _distractors()[:40]:
            store.add_insight(text, status="active")
        train = [
            Task(
                id=f"p{i}",
                family="percent",
                prompt=f"A shirt costs {20 + i} dollars and the price rises "
                f"by {10 + i} percent. What is the new price?",
            )
            for i in range(3)
        ]
        for task in train:
            store.credit([generic.id], task, reward=1.0, baseline=0.0, episode_id=f"e-{task.id}")
        query = Task(
            id="new",
            family="percent",
            prompt="A book costs 40 dollars and the price rises by 25 percent. What does it cost now?",
        )
        scored = store.explain_retrieval(query, train=False)
        assert scored[0].insight.id == generic.id and scored[0].n_eff > 1.5 and scored[0].utility == 1.0
        # On an unrelated problem the credit barely carries over.
        other = store.explain_retrieval(
            Task(id="o", family="x", prompt="Plan a vegetable garden."), train=False
        )
        assert other[0].insight.id != generic.id


def test_index_rebuilds_after_delete_or_truncate(filled, embedder):
    run_dir, ids = filled
    prompt = TARGETS["triangle"][1]
    with MemoryStore.open(run_dir, embedder, MemoryConfig()) as store:
        want = [(i.id, round(s, 4)) for i, s in store.search(prompt, 5)]
        assert store.index_state == "loaded"
    index = run_dir / "index.faiss"
    index.unlink()
    with MemoryStore.open(run_dir, embedder, MemoryConfig()) as store:
        assert [(i.id, round(s, 4)) for i, s in store.search(prompt, 5)] == want
        assert store.index_state == "rebuilt (missing)"
    assert index.exists()
    index.write_bytes(index.read_bytes()[: index.stat().st_size // 2])
    with MemoryStore.open(run_dir, embedder, MemoryConfig(), readonly=True) as store:
        assert [(i.id, round(s, 4)) for i, s in store.search(prompt, 5)] == want
        assert store.index_state == "rebuilt (corrupt)"


CHILD = r"""
import sys
from insightloop.core.config import MemoryConfig
from insightloop.core.models import embedded_embedder_path
from insightloop.core.task import Task
from insightloop.memory.embed import SentenceTransformerEmbedder
from insightloop.memory.store import MemoryStore

store = MemoryStore.open(sys.argv[1], SentenceTransformerEmbedder(str(embedded_embedder_path())),
                         MemoryConfig(dedup_threshold=1.0))
task = Task(id="t", family="f", prompt="a training problem about counting apples")
for i in range(100000):
    ins, _ = store.add_insight(f"Lesson {i}: count the {i % 7} kinds of items in group {i} twice.",
                               status="active")
    print(ins.id, flush=True)
    store.credit([ins.id], task, reward=1.0, baseline=0.5, episode_id=f"e{i}")
    if i % 5 == 0:
        store.save_index()
"""


def test_sigkill_mid_batch_loses_nothing_committed(tmp_path, embedder):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env, cwd="/"
    )
    committed: list[str] = []
    seen_counts: list[int] = []
    try:
        assert child.stdout is not None
        deadline = time.monotonic() + 120
        while len(committed) < 24 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            committed.append(line.strip())
            if len(committed) % 6 == 0:  # a concurrent reader sees a consistent, growing memory
                with MemoryStore.open(tmp_path, embedder, MemoryConfig(), readonly=True) as reader:
                    listed = reader.list_insights()
                    assert all(reader.get(i.id).text == i.text for i in listed)
                    seen_counts.append(len(listed))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    assert len(committed) >= 24, "the writer did not get going"
    assert seen_counts == sorted(seen_counts) and seen_counts[0] >= 6
    conn = sqlite3.connect(tmp_path / "memory.sqlite")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    with MemoryStore.open(tmp_path, embedder, MemoryConfig(dedup_threshold=1.0)) as store:
        stored = {i.id for i in store.list_insights()}
        assert set(committed) <= stored and len(stored) - len(committed) <= 1
        hits = store.search("Lesson 7: count the 0 kinds of items in group 7 twice.", 1)
        assert hits[0][0].text.startswith("Lesson 7:")
        assert store.add_insight("a lesson written after the crash", status="active")[1]


@pytest.mark.gpu
def test_gpu_index_search_matches_cpu():
    from insightloop.memory.index import VectorIndex, _gpu_count

    if _gpu_count() == 0:
        pytest.skip("faiss has no GPU support here")
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((2000, 384)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    gpu, cpu = VectorIndex(384, use_gpu=True), VectorIndex(384, use_gpu=False)
    for index in (gpu, cpu):
        index.add(np.arange(2000), vecs)
    assert np.array_equal(gpu.search(vecs[:5], 3)[1], cpu.search(vecs[:5], 3)[1])
    assert gpu._gpu is not None
