"""The memory file's schema version on open: newer refused, older migrated, damaged files named."""

from __future__ import annotations

import sqlite3

import pytest
from insightloop.core.config import MemoryConfig
from insightloop.core.episode import Episode
from insightloop.core.errors import UserError
from insightloop.core.task import Reward, Task
from insightloop.memory import schema
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.errors import MemoryFileError, MemoryVersionError
from insightloop.memory.store import MemoryStore


def _open(path, readonly=False):
    return MemoryStore.open(path, HashingEmbedder(), MemoryConfig(), readonly=readonly)


def _pragma(db, name):
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"PRAGMA {name}").fetchone()[0]
    finally:
        conn.close()


def _set_version(db, version):
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def _tables(db):
    conn = sqlite3.connect(db)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()


def test_a_new_memory_records_the_schema_version(tmp_path):
    with _open(tmp_path):
        pass
    assert _pragma(tmp_path / "memory.sqlite", "user_version") == schema.SCHEMA_VERSION


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
def test_a_newer_schema_version_is_refused_and_left_alone(tmp_path, readonly):
    with _open(tmp_path) as store:
        store.add_insight("a lesson from a newer insightloop")
    db = tmp_path / "memory.sqlite"
    _set_version(db, schema.SCHEMA_VERSION + 1)
    with pytest.raises(MemoryVersionError) as info:
        _open(tmp_path, readonly=readonly)
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    message = str(info.value)
    assert str(db) in message and "upgrade insightloop" in message and "export" in message
    assert _pragma(db, "user_version") == schema.SCHEMA_VERSION + 1  # not touched


def test_an_older_known_version_is_migrated_by_a_writer_and_refused_by_a_reader(tmp_path):
    # A file written before the version was recorded: version 0, and a table and an index missing.
    with _open(tmp_path) as store:
        ins, _ = store.add_insight("a lesson kept across the upgrade", status="active")
    db = tmp_path / "memory.sqlite"
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE kv")
    conn.execute("DROP INDEX attempts_task")
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    with pytest.raises(MemoryVersionError, match="open the run once for writing"):
        _open(tmp_path, readonly=True)
    with _open(tmp_path) as store:
        assert store.get(ins.id).text == "a lesson kept across the upgrade"
        store.kv_set("checkpoint", "ckpt/1")
    assert _pragma(db, "user_version") == schema.SCHEMA_VERSION and "kv" in _tables(db)
    with _open(tmp_path, readonly=True) as reader:
        assert reader.kv_get("checkpoint") == "ckpt/1"


def test_migration_steps_run_once_each_in_order(tmp_path, monkeypatch):
    with _open(tmp_path) as store:
        store.add_insight("a lesson from schema version one")
    ran = []

    def add_note_column(conn):
        ran.append(1)
        conn.execute("ALTER TABLE insights ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    monkeypatch.setattr(schema, "SCHEMA_VERSION", schema.SCHEMA_VERSION + 1)
    monkeypatch.setitem(schema.MIGRATIONS, schema.SCHEMA_VERSION - 1, add_note_column)
    db = tmp_path / "memory.sqlite"
    for _ in range(2):
        with _open(tmp_path) as store:
            assert len(store.list_insights()) == 1
    assert ran == [1] and _pragma(db, "user_version") == schema.SCHEMA_VERSION


@pytest.mark.parametrize("readonly", [False, True], ids=["writer", "reader"])
@pytest.mark.parametrize("damage", ["not-sqlite", "bad-header"])
def test_a_file_that_is_not_a_memory_database_is_named_with_what_to_do(tmp_path, readonly, damage):
    db = tmp_path / "memory.sqlite"
    if damage == "not-sqlite":
        db.write_bytes(b"this is a note someone saved under the wrong name\n" * 200)
    else:
        with _open(tmp_path) as store:
            store.add_insight("a lesson in a file about to be damaged")
        data = bytearray(db.read_bytes())
        data[:16] = b"\x00" * 16  # the SQLite magic string
        db.write_bytes(bytes(data))
    before = db.read_bytes()
    with pytest.raises(MemoryFileError) as info:
        _open(tmp_path, readonly=readonly)
    assert isinstance(info.value, UserError) and info.value.exit_code == 2
    message = str(info.value)
    assert str(db) in message and "restore" in message and "move the file aside" in message
    assert db.read_bytes() == before  # refused, not repaired or overwritten


def _version_1_file(db, episodes):
    """A memory as version 1 wrote it: the v1 tables, episodes with their bodies and no summaries."""
    conn = sqlite3.connect(db, isolation_level=None)
    schema.MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version = 1")
    for ep in episodes:
        reward = None if ep.reward is None else ep.reward.score
        conn.execute(
            "INSERT INTO episodes (id, task_id, family, reward, correct, created, body) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (ep.id, ep.task.id, ep.task.family, reward, int(ep.correct), ep.started, ep.model_dump_json()),
        )
    conn.execute("INSERT INTO episodes (id, task_id, family, reward, correct, created, body) "
                 "VALUES ('broken', 't', NULL, NULL, 0, 5.0, '{not json')")
    conn.close()


def test_version_1_episodes_gain_summaries_filled_from_their_bodies(tmp_path):
    task = Task(id="t1", family="arith", prompt="What is 2 + 2?", answer="4")
    episodes = [
        Episode(id=f"e{i}", task=task, reward=None if i == 3 else Reward(score=float(i % 2)),
                insights_used=["a"] * (i % 3), rollouts=i, prompt_tokens=10 * i, completion_tokens=i,
                started=100.0 + i, finished=None if i == 4 else 100.5 + i,
                meta={"phase": "train", "usd": 0.01 * i})
        for i in range(1200)  # more than one page of the backfill
    ]
    db = tmp_path / "memory.sqlite"
    _version_1_file(db, episodes)
    with pytest.raises(MemoryVersionError):
        _open(tmp_path, readonly=True)
    with _open(tmp_path) as store:
        migrated = {s.id: s for s in store.episode_summaries()}
    assert _pragma(db, "user_version") == schema.SCHEMA_VERSION
    with _open(tmp_path / "fresh") as store:
        for ep in episodes:
            store.add_episode(ep)
        written = {s.id: s for s in store.episode_summaries()}
    assert migrated.pop("broken").rollouts == 0  # an unreadable body keeps the defaults
    assert migrated == written and migrated["e3"].reward is None and migrated["e4"].finished is None
    with _open(tmp_path, readonly=True) as reader:
        assert len(reader.episode_summaries()) == 1201
