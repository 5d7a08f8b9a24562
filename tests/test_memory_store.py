"""The memory store on a hashing embedder: dedup, credit, lifecycle, versions, transfer, safety."""

from __future__ import annotations

import json
import random

import pytest
from insightloop.core.config import MemoryConfig
from insightloop.core.episode import Episode
from insightloop.core.task import Reward, Task
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.episodes import load_episodes, open_episodes
from insightloop.memory.records import Attempt, clean_text
from insightloop.memory.store import MemoryStore, ReadOnlyError

T1 = Task(id="t1", family="digits", prompt="compute the sum of the digits of 4821")
T2 = Task(id="t2", family="words", prompt="sort these words alphabetically: pear apple fig")


def _open(path, readonly=False, **cfg):
    return MemoryStore.open(
        path,
        HashingEmbedder(),
        MemoryConfig(**cfg),
        readonly=readonly,
        rng=random.Random(0),
        clock=lambda: 1000.0,
    )


@pytest.fixture
def store(tmp_path):
    with _open(tmp_path) as s:
        yield s


def _snapshot(store: MemoryStore):
    insights = [i.model_dump() for i in store.list_insights(sort="recent")]
    stats = {i["id"]: [s.model_dump() for s in store.task_stats(i["id"])] for i in insights}
    return insights, stats


# ---- records and cleaning -------------------------------------------------------------------
def test_clean_text_strips_control_characters_and_caps_length():
    assert clean_text("a\x00b\x1b[31m c\u200b\n\td  ", 100) == "ab[31m c d"
    capped = clean_text("word " * 100, 42)
    assert len(capped) <= 42 and not capped.endswith(" ") and capped.startswith("word word")


def test_add_insight_cleans_and_rejects_empty(store):
    ins, new = store.add_insight(
        "Check\x07 the  units\n" + "x" * 1000, kind="pitfall", applies_when="units\x00"
    )
    assert new and "\x07" not in ins.text and len(ins.text) <= store.cfg.max_insight_chars
    assert ins.applies_when == "units" and ins.kind == "pitfall" and ins.status == "pending"
    with pytest.raises(ValueError):
        store.add_insight("\x00\x01  ")


# ---- dedup ----------------------------------------------------------------------------------
def test_near_duplicate_merges_support(store):
    a, new_a = store.add_insight(
        "Check the parity of the sum before answering.", source_episode="e1", source_task="t1", model="m1"
    )
    b, new_b = store.add_insight(
        "check the parity of the sum before answering", source_episode="e2", source_task="t2"
    )
    c, new_c = store.add_insight("Sort words by their first letter, then the second.", source_episode="e3")
    assert new_a and not new_b and new_c
    assert b.id == a.id and c.id != a.id
    assert b.source_episodes == ["e1", "e2"] and b.source_tasks == ["t1", "t2"] and b.meta["support"] == 2
    assert b.model == "m1" and len(store.list_insights()) == 2
    assert store.events()[-2].kind == "merge"


def test_dedup_threshold_is_configurable(tmp_path):
    with _open(tmp_path, dedup_threshold=1.0) as s:
        s.add_insight("check the parity of the sum before answering now")
        _, new = s.add_insight("check the parity of the sum before answering")
        assert new


# ---- credit and lifecycle -------------------------------------------------------------------
def test_credit_accumulates_overall_and_per_task(store):
    a, _ = store.add_insight("write each step", status="active")
    b, _ = store.add_insight("state the answer last", status="active")
    assert store.credit([a.id, b.id, a.id, "gone"], T1, reward=1.0, baseline=0.25, episode_id="e1") == [
        a.id,
        b.id,
    ]
    store.credit([a.id], T1, reward=0.0, baseline=0.25, episode_id="e2")
    store.credit([a.id], T2, reward=1.0, baseline=1.0, episode_id="e3")
    got = store.get(a.id)
    assert got.uses == 3 and got.successes == 2
    assert got.utility_sum == pytest.approx(0.75 - 0.25 + 0.0)
    assert got.utility_sq == pytest.approx(0.75**2 + 0.25**2)
    per_task = {s.task_id: s for s in store.task_stats(a.id)}
    assert per_task["t1"].uses == 2 and per_task["t1"].utility == pytest.approx(0.25)
    assert per_task["t2"].uses == 1 and per_task["t2"].utility == 0.0
    ev = [e for e in store.events() if e.kind == "credit"][0]
    assert ev.payload["insight_ids"] == [a.id, b.id] and ev.payload["missing"] == ["gone"]
    assert ev.payload["delta"] == pytest.approx(0.75) and ev.payload["episode_id"] == "e1"
    assert store.credit([], T1, 1.0, 0.0, "e4") == [] and store.get(b.id).uses == 1


def test_retire_if_harmful_needs_confidence_and_uses(tmp_path):
    with _open(tmp_path, retire_min_uses=4, retire_z=1.64) as store:
        harmful, _ = store.add_insight("always answer zero", status="active")
        noisy, _ = store.add_insight("try a random guess", status="active")
        young, _ = store.add_insight("skip the last step", status="active")
        for i in range(6):
            store.credit([harmful.id], T1, reward=0.0, baseline=0.5 + 0.05 * (i % 2), episode_id=f"h{i}")
            store.credit([noisy.id], T1, reward=float(i % 2), baseline=0.5, episode_id=f"n{i}")
        for i in range(3):
            store.credit([young.id], T1, reward=0.0, baseline=1.0, episode_id=f"y{i}")
        retired = store.retire_if_harmful()
        assert [i.id for i in retired] == [harmful.id]
        assert (
            store.get(harmful.id).status == "retired"
            and "harmful" in store.get(harmful.id).meta["status_reason"]
        )
        assert store.get(noisy.id).status == "active" and store.get(young.id).status == "active"
        assert store.retire_if_harmful() == []


def test_admission_edit_status_and_absorb(store):
    a, _ = store.add_insight("draw a table of cases")
    b, _ = store.add_insight("count from the end of the list")
    assert store.record_admission(a.id, True, "solved its source").status == "active"
    rejected = store.record_admission(b.id, False, "did not solve its source")
    assert rejected.status == "retired" and rejected.meta["status_reason"] == "did not solve its source"
    # A verdict on an insight that is no longer pending only records the verdict.
    assert store.record_admission(a.id, False, "retest failed").status == "active"
    edited = store.edit(a.id, "draw a table of all the cases\x00")
    assert (
        edited.text == "draw a table of all the cases"
        and store.search("table of all the cases", 1)[0][0].id == a.id
    )
    assert store.set_status(b.id, "active", "curated").meta["status_reason"] == "curated"
    absorbed = store.mark_absorbed(a.id, "ckpt-3")
    assert absorbed.absorbed and absorbed.meta["absorbed_into"] == "ckpt-3"
    with pytest.raises(KeyError):
        store.get("nope")
    with pytest.raises(KeyError):
        store.edit("nope", "text")


# ---- attempts, episodes, baselines, kv -------------------------------------------------------
def test_attempts_are_deduplicated_and_found_by_task_similarity(store):
    a1 = store.add_attempt(
        Attempt(task_id="t1", task_text=T1.prompt, family="digits", text="4+8+2+1=15", reward=1)
    )
    assert (
        store.add_attempt(
            Attempt(task_id="t1", task_text=T1.prompt, family="digits", text="4+8+2+1=15", reward=1)
        ).id
        == a1.id
    )
    store.add_attempt(
        Attempt(task_id="t2", task_text=T2.prompt, family="words", text="apple fig pear", reward=1)
    )
    hits = store.similar_attempts("compute the sum of the digits of 777", k=2)
    assert hits[0][0].id == a1.id and hits[0][1] > hits[1][1]
    only_words = store.similar_attempts("compute the sum of the digits of 777", k=2, family="words")
    assert [h[0].task_id for h in only_words] == ["t2"]
    assert len(store.list_attempts()) == 2


def test_episodes_baselines_and_kv(store):
    ok = Episode(id="ep1", task=T1, reward=Reward(score=1.0), insights_used=["i1"])
    bad = Episode(id="ep2", task=T2, reward=Reward(score=0.0), started=ok.started + 1)
    store.add_episode(ok)
    store.add_episode(bad.model_dump(mode="json"))
    assert store.get_episode("ep1") == ok
    assert [e.id for e in store.list_episodes()] == ["ep1", "ep2"]
    assert [e.id for e in store.list_episodes(failed_only=True)] == ["ep2"]
    with pytest.raises(KeyError):
        store.get_episode("nope")
    assert store.baseline("t1") is None
    store.set_baseline("t1", 0.5, 4)
    assert store.baseline("t1") == 0.5 and store.baseline_info("t1") == (0.5, 4)
    with pytest.raises(ValueError):
        store.set_baseline("t1", 1.5, 4)
    version = store.version
    store.kv_set("checkpoint", {"path": "ckpt/1"})
    assert store.kv_get("checkpoint") == {"path": "ckpt/1"} and store.kv_get("missing", 7) == 7
    assert store.version == version  # run state is not a memory change


def test_the_episodes_part_alone_writes_where_the_store_reads(tmp_path):
    assert load_episodes(tmp_path) == [] and not (tmp_path / "memory.sqlite").exists()
    late = Episode(id="b-ep", task=T2, reward=Reward(score=0.0))
    early = Episode(id="a-ep", task=T1, reward=Reward(score=1.0), started=late.started + 1)
    with open_episodes(tmp_path) as episodes:
        episodes.add(late)
        episodes.add(early)
        assert episodes.get("a-ep") == early
    assert [e.id for e in load_episodes(tmp_path)] == ["a-ep", "b-ep"]  # id order, not time
    with _open(tmp_path, readonly=True) as s:
        assert [e.id for e in s.list_episodes()] == ["b-ep", "a-ep"] and s.version == 2



def test_episode_summaries_are_written_with_the_episode(store):
    done = Episode(id="s1", task=T1, reward=Reward(score=1.0), insights_used=["i1", "i2"], rollouts=6,
                   prompt_tokens=300, completion_tokens=90, started=10.0, finished=12.5,
                   meta={"phase": "train", "usd": 0.25})
    open_ = Episode(id="s2", task=T2, started=11.0, meta={"usd": "n/a"})
    store.add_episode(done)
    store.add_episode(open_)
    store.add_episode(done.model_copy(update={"rollouts": 7}))  # a replaced episode keeps one summary
    first, second = store.episode_summaries()
    assert (first.id, first.task_id, first.family, first.phase) == ("s1", "t1", "digits", "train")
    assert (first.reward, first.correct, first.insights_used, first.rollouts) == (1.0, True, 2, 7)
    assert (first.prompt_tokens, first.completion_tokens, first.usd, first.seconds) == (300, 90, 0.25, 2.5)
    assert (second.reward, second.correct, second.finished, second.phase) == (None, False, None, None)
    assert (second.usd, second.seconds, second.insights_used) == (0.0, 0.0, 0)

# ---- versions ---------------------------------------------------------------------------------
def test_every_change_is_a_versioned_event(store):
    assert store.version == 0 and store.versions() == []
    a, _ = store.add_insight("first insight text")
    store.record_admission(a.id, True, "ok")
    store.credit([a.id], T1, 1.0, 0.0, "e1")
    kinds = [e.kind for e in store.events()]
    assert kinds == ["add", "admission", "credit"] and store.version == 3
    assert [e.version for e in store.events(since_version=1)] == [2, 3]
    assert "rows" not in store.events()[0].payload


def test_diff_lists_added_removed_and_changed(store):
    a, _ = store.add_insight("alpha insight about parity")
    v1 = store.version
    b, _ = store.add_insight("beta insight about sorting words")
    store.record_admission(a.id, True, "ok")
    d = store.diff(v1, store.version)
    assert [i.id for i in d.added] == [b.id] and d.removed == []
    assert [c.id for c in d.changed] == [a.id] and d.changed[0].fields["status"] == ("pending", "active")
    assert len(d.events) == 2
    back = store.diff(store.version, v1)
    assert [i.id for i in back.removed] == [b.id]
    assert store.diff(v1, v1).empty
    with pytest.raises(ValueError):
        store.diff(0, store.version + 1)


def test_rollback_restores_exactly(store):
    a, _ = store.add_insight("alpha insight about parity", status="active")
    b, _ = store.add_insight("beta insight about sorting words", status="active")
    store.credit([a.id, b.id], T1, 1.0, 0.5, "e1")
    v = store.version
    before = _snapshot(store)
    c, _ = store.add_insight("gamma insight about dates", status="active")
    store.credit([a.id, c.id], T2, 0.0, 0.5, "e2")
    store.edit(b.id, "beta insight rewritten about ordering")
    store.set_status(a.id, "retired", "test")
    store.add_insight("alpha insight about parity!", source_episode="e9")  # a merge into a
    assert _snapshot(store) != before
    new_version = store.rollback(v)
    assert new_version == store.version and store.events()[-1].kind == "rollback"
    assert _snapshot(store) == before
    # The index follows: the removed insight is gone, the old text is found again.
    assert c.id not in [i.id for i, _ in store.search("gamma insight about dates", 5)]
    assert store.search("beta insight about sorting words", 1)[0][0].id == b.id
    # A rollback is itself a version: rolling back over it restores the later state.
    after_changes = store.diff(v, new_version - 1)
    store.rollback(new_version - 1)
    assert {i.id for i in store.list_insights()} == {a.id, b.id, c.id}
    assert store.diff(v, store.version).model_dump(exclude={"events", "v2"}) == after_changes.model_dump(
        exclude={"events", "v2"}
    )
    store.rollback(0)
    assert store.list_insights() == [] and store.task_stats(a.id) == []


def test_rollback_to_unknown_version_fails(store):
    with pytest.raises(ValueError):
        store.rollback(3)


# ---- export / import --------------------------------------------------------------------------
def _fill(store: MemoryStore) -> None:
    a, _ = store.add_insight(
        "add digits from the right",
        status="active",
        model="smollm2",
        family="digits",
        source_episode="e1",
        source_task="t1",
    )
    b, _ = store.add_insight(
        "alphabetical order compares letters one by one", status="active", model="smollm2"
    )
    store.add_insight("a pending idea about words")
    store.credit([a.id, b.id], T1, 1.0, 0.5, "e1")
    store.credit([b.id], T2, 0.0, 0.5, "e2")
    store.set_baseline("t1", 0.5, 2)
    store.add_attempt(Attempt(task_id="t1", task_text=T1.prompt, family="digits", text="15", reward=1.0))


def test_export_import_round_trip(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    with _open(src) as a:
        _fill(a)
        n = a.export_jsonl(tmp_path / "mem.jsonl")
        want_insights, want_stats = _snapshot(a)
        want_retrieval = [i.id for i in a.retrieve(T1, k=3)]
    lines = [json.loads(x) for x in (tmp_path / "mem.jsonl").read_text().splitlines()]
    assert len(lines) == n and lines[0]["type"] == "header" and lines[0]["memory_version"] > 0
    assert {x["type"] for x in lines} == {"header", "insight", "task", "baseline", "attempt"}
    with _open(dst) as b:
        report = b.import_jsonl(tmp_path / "mem.jsonl")
        assert (report.added, report.merged, report.skipped) == (3, 0, 0)
        assert (report.tasks, report.baselines, report.attempts) == (2, 1, 1)
        got_insights, got_stats = _snapshot(b)
        strip = [{k: v for k, v in i.items() if k != "version"} for i in got_insights]
        assert strip == [{k: v for k, v in i.items() if k != "version"} for i in want_insights]
        assert got_stats == want_stats
        assert got_insights[0]["model"] == "smollm2" or got_insights[1]["model"] == "smollm2"
        assert b.baseline("t1") == 0.5 and len(b.list_attempts()) == 1
        assert [i.id for i in b.retrieve(T1, k=3)] == want_retrieval
        assert b.events()[-1].kind == "import"
        again = b.import_jsonl(tmp_path / "mem.jsonl")
        assert (again.added, again.skipped, again.attempts, again.tasks) == (0, 3, 0, 0)


def test_import_merges_near_duplicates_and_rejects_bad_files(tmp_path):
    with _open(tmp_path / "a") as a:
        a.add_insight("add digits from the right", source_episode="e1")
        a.export_jsonl(tmp_path / "a.jsonl")
    with _open(tmp_path / "b") as b:
        mine, _ = b.add_insight("Add digits from the right.", source_episode="e7")
        report = b.import_jsonl(tmp_path / "a.jsonl")
        assert (report.added, report.merged) == (0, 1)
        assert b.get(mine.id).source_episodes == ["e7", "e1"] and b.get(mine.id).meta["support"] == 2
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"type": "header", "format": "insightloop.memory"}\n{"type": "insight", "text": 3}\n')
        with pytest.raises(ValueError, match="bad.jsonl:2"):
            b.import_jsonl(bad)
        bad.write_text('{"type": "attempt"}\n')
        with pytest.raises(ValueError):
            b.import_jsonl(bad)


# ---- safety: readers, read-only, the index file -----------------------------------------------
def test_reader_sees_committed_changes_and_cannot_write(tmp_path):
    with _open(tmp_path) as writer:
        a, _ = writer.add_insight("first lesson about parity", status="active")
        with _open(tmp_path, readonly=True) as reader:
            assert [i.id for i, _ in reader.search("parity lesson", 5)] == [a.id]
            b, _ = writer.add_insight("second lesson about sorting", status="active")
            assert reader.version == writer.version
            assert reader.search("second lesson about sorting", 1)[0][0].id == b.id
            writer.rollback(1)
            assert [i.id for i, _ in reader.search("second lesson about sorting", 5)] == [a.id]
            with pytest.raises(ReadOnlyError):
                reader.add_insight("nope")
            with pytest.raises(ReadOnlyError):
                reader.kv_set("x", 1)
    with pytest.raises(FileNotFoundError):
        _open(tmp_path / "missing", readonly=True)


def test_index_is_saved_and_rebuilt_when_missing_stale_or_corrupt(tmp_path):
    with _open(tmp_path) as s:
        ids = [
            s.add_insight(f"lesson number {w} about {w} things", status="active")[0].id
            for w in ("alpha", "beta", "gamma", "delta")
        ]
    index, stamp = tmp_path / "index.faiss", tmp_path / "index.faiss.json"
    assert index.exists() and json.loads(stamp.read_text())["version"] == 4

    def reopen_state():
        with _open(tmp_path) as s:
            assert s.search("lesson about gamma things", 1)[0][0].id == ids[2]
            return s.index_state

    assert reopen_state() == "loaded"
    index.unlink()
    assert reopen_state() == "rebuilt (missing)"
    index.write_bytes(index.read_bytes()[:100])
    assert reopen_state() == "rebuilt (corrupt)"
    meta = json.loads(stamp.read_text())
    stamp.write_text(json.dumps({**meta, "version": 1}))
    assert reopen_state() == "rebuilt (stale)"
    assert reopen_state() == "loaded"


class _Reversed(HashingEmbedder):
    """Same dimension, different vectors: stands in for another model."""

    def encode(self, texts):
        return super().encode(texts)[:, ::-1].copy()


@pytest.mark.parametrize("other", [HashingEmbedder(dim=64), _Reversed()], ids=["other-dim", "same-dim"])
def test_changing_the_embedder_reembeds(tmp_path, other):
    with _open(tmp_path) as s:
        a, _ = s.add_insight("lesson about parity of sums", status="active")
        s.add_insight("sorting words alphabetically", status="active")
        assert s.search("parity", 1)[0][0].id == a.id
    with MemoryStore.open(tmp_path, other, MemoryConfig(), readonly=True) as r:
        hit, score = r.search("lesson about parity of sums", 1)[0]
        assert hit.id == a.id and score == pytest.approx(1.0, abs=1e-5)
    with MemoryStore.open(tmp_path, other, MemoryConfig()) as s:
        hit, score = s.search("lesson about parity of sums", 1)[0]
        assert hit.id == a.id and score == pytest.approx(1.0, abs=1e-5)
        assert "rebuilt" in s.index_state
    with MemoryStore.open(tmp_path, other, MemoryConfig()) as s:
        assert s.search("lesson about parity of sums", 1)[0][1] == pytest.approx(1.0, abs=1e-5)
        assert s.index_state == "loaded"


def test_a_replayed_seed_never_overwrites_a_stored_insight(tmp_path):
    with _open(tmp_path) as s:
        first, _ = s.add_insight("lesson one about parity")
    with _open(tmp_path) as s:  # same rng seed: the first generated id is taken
        second, new = s.add_insight("another lesson about sorting words")
        assert new and second.id != first.id
        assert s.get(first.id).text == "lesson one about parity"
