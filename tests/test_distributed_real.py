"""The daemon and the harness on a local Ray runtime with 2 CPU workers, through the console script,
on the embedded SmolLM2 policy with tiny budgets.

Covers: every inbox task answered exactly once across a `kill -9` of a worker mid-task (replaced,
its task run again by another worker, status.json saying so) and a `kill -9` of the driver (the
restart resumes); `eval --workers 2` gives the records of `eval --workers 1` for the same seeds.
Each run starts its own local Ray runtime (small object store, loopback only) and ends it; the Ray
processes a killed driver leaves behind are ended here, by pid.
"""

from __future__ import annotations

import json
import os
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
RAY = ["ray.object_store_mb=100", "daemon.stop_grace_s=2"]
TINY = ["search.strategy=sample", "search.rollouts=1", "search.answer_tokens=8", "search.seed=1",
        "loop.baseline_samples=0", "loop.synthesize=false", "loop.max_candidates=1", "loop.pairs=1",
        "loop.analyst_tokens=24", "policy.threads=1", "daemon.inbox_settle_s=0", "daemon.status_every_s=0.3",
        "daemon.poll_seconds=0.2", *RAY]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def sets(items: list[str]) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def start(run_dir: Path, *flags: str) -> subprocess.Popen:
    log = open(run_dir.parent / f"{run_dir.name}.stderr", "ab")  # noqa: SIM115 - closed with the process
    cmd = [CLI, "daemon", "--run-dir", str(run_dir), "--workers", "2", *flags, *sets(TINY)]
    return subprocess.Popen(cmd, cwd=run_dir.parent, env=ENV, stdout=log, stderr=log)


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def status(run_dir: Path, pid: int) -> dict | None:
    """status.json as written by the driver `pid` (None before it writes one)."""
    try:
        st = json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return st if st["pid"] == pid else None


def done_count(run_dir: Path) -> int:
    path = run_dir / "daemon.sqlite"
    if not path.exists():
        return 0
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as con:
        try:
            return con.execute("SELECT COUNT(*) FROM tasks WHERE state='done'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def done_ids(run_dir: Path) -> set[str]:
    with sqlite3.connect(f"file:{run_dir / 'daemon.sqlite'}?mode=ro", uri=True) as con:
        return {r[0] for r in con.execute("SELECT task_id FROM tasks WHERE state='done'")}


def outbox_ids(run_dir: Path, name: str) -> list[str]:
    path = run_dir / "outbox" / name
    return [json.loads(line)["id"] for line in path.read_text().splitlines()] if path.exists() else []


def kill_tree(proc: subprocess.Popen) -> None:
    """`kill -9` the driver; then end, by pid, the Ray processes it started that outlive it."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=15)
    for child in alive:
        try:
            child.kill()
        except psutil.NoSuchProcess:
            pass


def working_worker(run_dir: Path, pid: int) -> dict | None:
    st = status(run_dir, pid)
    busy = [w for w in (st or {}).get("workers", []) if w["state"] == "working" and w["pid"]]
    return busy[0] if busy and done_count(run_dir) >= 1 else None


def test_every_task_answered_once_across_kill9_of_a_worker_and_of_the_driver(tmp_path: Path) -> None:
    run, n = tmp_path / "run", 6
    (run / "inbox").mkdir(parents=True)
    tasks = [json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i}?", "answer": str(2 * i),
                         "verifier": "numeric"}) for i in range(1, n + 1)]
    (run / "inbox" / ".batch.tmp").write_text("\n".join(tasks) + "\n")
    os.replace(run / "inbox" / ".batch.tmp", run / "inbox" / "batch.jsonl")

    proc = start(run)
    try:
        victim = wait_for(lambda: working_worker(run, proc.pid), 240, "a worker inside a task")
        assert isinstance(victim, dict)
        os.kill(victim["pid"], signal.SIGKILL)  # mid-task
        wait_for(lambda: any(w["replaced"] for w in (status(run, proc.pid) or {}).get("workers", [])), 120,
                 "the dead worker to be replaced")
        st = status(run, proc.pid)
        assert st is not None
        slot = next(w for w in st["workers"] if w["replaced"])
        assert slot["replaced"] == 1 and slot["note"].startswith("died running batch.jsonl:q")
        assert slot["name"] == f"{victim['name']}.2"
        lost = slot["note"].split()[2].rstrip(":")  # the task the worker died running: file:id
        wait_for(lambda: lost.split(":")[1] in done_ids(run), 180, "the dead worker's task to be done")
    finally:
        kill_tree(proc)  # the driver, kill -9, with the work of its workers in flight
    assert done_count(run) < n or outbox_ids(run, "batch.jsonl")

    again = start(run, "--exit-when-idle")
    assert again.wait(timeout=300) == 0
    assert sorted(outbox_ids(run, "batch.jsonl")) == sorted(f"q{i}" for i in range(1, n + 1))  # each once
    assert done_count(run) == n and (run / "done" / "batch.jsonl").exists() and not any((run / "failed").iterdir())
    logs = [json.loads(line) for line in (run / "logs" / "daemon.jsonl").read_text().splitlines()]
    died = [r for r in logs if r["msg"] == "worker_died"]
    assert len(died) == 1 and died[0]["worker"] == victim["name"] and died[0]["task"] == lost
    redone = [r for r in logs if r["msg"] == "episode_done" and r["task"] == lost]
    assert len(redone) == 1 and redone[0]["worker"] not in (victim["name"], f"{victim['name']}.2")  # another one
    assert sum(r["msg"] == "stale_lock" for r in logs) == 1  # the restart recovered the killed driver's lock
    final = json.loads((run / "status.json").read_text())
    assert final["state"] == "stopped" and final["counters"]["done"] == n and final["memory_version"] >= n


EVAL = ["policy.threads=1", "search.strategy=sample", "search.rollouts=2", "search.answer_tokens=24",
        "loop.baseline_samples=1", "loop.pairs=1", "loop.max_candidates=1", "loop.analyst_tokens=24",
        "loop.synthesize=false", *RAY]


def test_eval_on_two_workers_gives_the_records_of_one_worker(tmp_path: Path) -> None:
    records = {}
    for workers in (2, 1):
        out = tmp_path / f"w{workers}"
        cmd = [CLI, "eval", "--suite", "bbh/boolean_expressions", "--methods", "none,core", "--train", "2",
               "--test", "4", "--budget", "4", "--seeds", "2", "--workers", str(workers), "--out", str(out),
               *sets(EVAL)]
        done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        assert f"{workers} worker(s) ready" in done.stderr
        records[workers] = json.loads((out / "results.json").read_text())["records"]
    timing = {"learn_seconds", "eval_seconds", "seconds"}
    two, one = ([{k: v for k, v in r.items() if k not in timing} for r in records[w]] for w in (2, 1))
    assert [(r["seed"], r["method"]) for r in two] == [(0, "none"), (0, "core"), (1, "none"), (1, "core")]
    assert two == one
    assert any(r["accuracy"] > 0 for r in one) and all(r["error"] is None for r in one)
