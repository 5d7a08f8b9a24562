"""End-to-end daemon tests: the `insightloop daemon` console script as a subprocess, on the embedded
SmolLM2 policy and MiniLM embedder, with tiny budgets (one sampled rollout of a few tokens per task).

Covers: inbox tasks come out answered; malformed files and lines land in failed/ with reasons while
good ones are processed; a second daemon is refused; `kill -9` at random points and restarts lose
no task and no committed insight; SIGTERM exits 0 within a few seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.real

CLI = str(Path(sys.executable).with_name("insightloop"))
TINY = ["search.strategy=sample", "search.rollouts=1", "search.answer_tokens=8", "search.seed=1",
        "loop.baseline_samples=0", "loop.synthesize=false", "loop.max_candidates=1", "loop.pairs=1",
        "loop.analyst_tokens=24", "policy.threads=1", "daemon.inbox_settle_s=0", "daemon.status_every_s=0.5",
        "daemon.poll_seconds=0.2", "daemon.stop_grace_s=2"]


def start(run_dir: Path, *flags: str) -> subprocess.Popen:
    cmd = [CLI, "daemon", "--run-dir", str(run_dir), *flags]
    for item in TINY:
        cmd += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    log = open(run_dir.parent / f"{run_dir.name}.stderr", "ab")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(cmd, cwd=run_dir.parent, env=env, stdout=log, stderr=log)


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def write_inbox(run_dir: Path, name: str, lines: list[str] | bytes) -> None:
    inbox = run_dir / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    data = lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode()
    (inbox / f".{name}.tmp").write_bytes(data)
    os.replace(inbox / f".{name}.tmp", inbox / name)  # the documented way to drop a file in


def task(i: int) -> str:
    return json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i),
                       "verifier": "numeric"})


def outbox_ids(run_dir: Path, name: str) -> list[str]:
    path = run_dir / "outbox" / name
    return [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []


def done_count(run_dir: Path) -> int:
    path = run_dir / "daemon.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM tasks WHERE state='done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def memory_rows(run_dir: Path) -> tuple[dict[str, int], set[int]]:
    """Committed insights (id -> uses) and memory event versions, as a fresh reader sees them."""
    con = sqlite3.connect(str(run_dir / "memory.sqlite"))  # a writer's connection recovers a dead WAL
    try:
        insights = dict(con.execute("SELECT id, uses FROM insights"))
        return insights, {r[0] for r in con.execute("SELECT version FROM events")}
    finally:
        con.close()


def seed_insights(run_dir: Path) -> set[str]:
    """Two active insights, so episodes retrieve and credit them (memory writes during the run)."""
    from insightloop.core.config import MemoryConfig
    from insightloop.memory.embed import make_embedder
    from insightloop.memory.store import MemoryStore

    texts = ["When adding two numbers, add them carefully and finish with the line 'Answer: <sum>'.",
             "When a question asks 'What is', give only the final number on the Answer line."]
    with MemoryStore.open(run_dir, make_embedder("embedded"), MemoryConfig()) as store:
        return {store.add_insight(t, "format", "arithmetic questions", status="active")[0].id for t in texts}


def state(run_dir: Path, pid: int | None = None) -> str:
    """The status.json state (of process `pid` only, when given: a killed daemon leaves its own)."""
    try:
        st = json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return ""
    return st["state"] if pid is None or st["pid"] == pid else ""


def test_inbox_answered_malformed_refused_and_second_daemon_locked_out(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_inbox(run, "good.jsonl", [task(1), task(2)])
    write_inbox(run, "junk.jsonl", b"\xff\xfe this is not JSON\n{also not\n")
    write_inbox(run, "mixed.jsonl", [task(3), json.dumps({"id": "x", "prompt": "p", "answer": "1",
                                                          "verifier": "oracle"})])
    proc = start(run, "--exit-when-idle")
    wait_for(lambda: (run / "daemon.lock").exists() and (run / "daemon.lock").read_text().strip() != "",
             60, "the lock")
    second = subprocess.run([CLI, "daemon", "--run-dir", str(run)], capture_output=True, text=True,
                            timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert second.returncode == 3
    assert f"(pid {proc.pid}) is already running" in second.stderr
    assert proc.wait(timeout=200) == 0

    assert sorted(p.name for p in (run / "done").iterdir()) == ["good.jsonl", "mixed.jsonl"]
    rows = [json.loads(line) for line in (run / "outbox" / "good.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["q1", "q2"]
    for r in rows:
        assert {"answer", "reward", "correct", "insights_used", "episode_id"} <= set(r)
        assert 0.0 <= r["reward"] <= 1.0
    assert outbox_ids(run, "mixed.jsonl") == ["q3"]
    junk = json.loads((run / "failed" / "junk.jsonl.error.json").read_text())
    assert junk["reason"] == "no valid task in the file"
    assert [p["line"] for p in junk["problems"]] == [1, 2]
    assert "invalid UTF-8" in junk["problems"][0]["reason"]
    mixed = json.loads((run / "failed" / "mixed.rejected.jsonl.error.json").read_text())
    assert mixed["problems"][0]["line"] == 2 and "unknown verifier 'oracle'" in mixed["problems"][0]["reason"]

    st = subprocess.run([CLI, "status", "--run-dir", str(run), "--json"], capture_output=True, text=True,
                        timeout=60, check=True)
    status = json.loads(st.stdout)
    assert status["state"] == "stopped" and status["running"] is False
    assert status["counters"]["done"] == 3 and status["counters"]["failed"] == 3
    assert status["budget"]["rollouts"]["used"] >= 3 and status["memory_version"] is not None
    pretty = subprocess.run([CLI, "status", "--run-dir", str(run)], capture_output=True, text=True,
                            timeout=60)
    assert pretty.returncode == 0 and "3 done, 3 failed" in pretty.stdout
    logs = [json.loads(line) for line in (run / "logs" / "daemon.jsonl").read_text().splitlines()]
    wanted = {"claimed", "episode_started", "episode_finished", "task_done", "file_failed"}
    assert wanted <= {r["msg"] for r in logs}


def test_kill9_and_sigterm_lose_no_task_and_no_committed_insight(tmp_path: Path) -> None:
    rng = random.Random(7)
    run = tmp_path / "run"
    n = 5
    seeded = seed_insights(run)
    write_inbox(run, "batch.jsonl", [task(i) for i in range(1, n + 1)])
    seen_insights, seen_versions = memory_rows(run)
    for cycle in range(2):  # kill -9 at a random moment once some work is committed
        proc = start(run)
        target = done_count(run) + 1
        wait_for(lambda t=target: done_count(run) >= t, 150, f"task {target} to finish (cycle {cycle})")
        time.sleep(rng.uniform(0.0, 3.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        insights, versions = memory_rows(run)
        assert seen_insights.keys() <= insights.keys() and seen_versions <= versions
        assert all(insights[i] >= uses for i, uses in seen_insights.items())  # credit is never undone
        seen_insights, seen_versions = insights, versions
        assert len(outbox_ids(run, "batch.jsonl")) >= done_count(run) - 1  # at most one line not yet appended

    # SIGTERM while an episode runs: exit 0 within a few seconds. The first batch may be finished by
    # now, so a second one guarantees there is work in flight when the signal arrives.
    late = list(range(101, 121))
    write_inbox(run, "late.jsonl", [task(i) for i in late])
    proc = start(run)
    wait_for(lambda: state(run, proc.pid) == "working", 120, "the daemon to be working")
    time.sleep(rng.uniform(0.0, 1.0))
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert time.monotonic() - t0 < 6.0
    assert state(run).startswith("stopped")

    proc = start(run, "--exit-when-idle")
    assert proc.wait(timeout=240) == 0
    ids = outbox_ids(run, "batch.jsonl")
    assert sorted(ids) == [f"q{i}" for i in range(1, n + 1)]  # every task exactly once
    assert sorted(outbox_ids(run, "late.jsonl")) == sorted(f"q{i}" for i in late)
    assert (run / "done" / "batch.jsonl").exists() and not any((run / "failed").iterdir())
    assert done_count(run) == n + len(late)
    insights, versions = memory_rows(run)
    assert seeded <= insights.keys() and seen_insights.keys() <= insights.keys() and seen_versions <= versions
    assert sum(insights[i] for i in seeded) >= n  # every finished episode credited the seeded insights
    logs = [json.loads(line) for line in (run / "logs" / "daemon.jsonl").read_text().splitlines()]
    assert sum(r["msg"] == "stale_lock" for r in logs) == 2  # both kill -9 restarts recovered the lock
