"""Unit tests of the daemon on fakes: inbox state machine, crash resume, lock, budget windows,
backend-failure pause, bad input, stop requests, practice, status and logs."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from insightloop.apps.daemon.guard import CallStats, GuardedLM, StopRequested
from insightloop.apps.daemon.lock import DaemonLocked, RunLock, lock_holder
from insightloop.apps.daemon.run import serve
from insightloop.apps.daemon.service import Daemon
from insightloop.apps.daemon.status import read_status
from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.core.episode import Episode
from insightloop.core.lm import Generation, GenRequest
from insightloop.core.task import Reward, Task


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeLM:
    """Answers `Answer: <w>` for the word after "Say " in the prompt; can error or raise."""

    name = "fake"

    def __init__(self) -> None:
        self.mode = "ok"  # ok | error | raise
        self.calls = 0
        self.on_call: callable | None = None  # type: ignore[valid-type]

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        self.calls += 1
        if self.on_call:
            self.on_call()
        if self.mode == "raise":
            raise ConnectionError("server unreachable")
        out = []
        for r in reqs:
            if self.mode == "error":
                out.append([Generation(text="", finish_reason="error", error="HTTP 503: overloaded")] * r.n)
            else:
                word = r.messages[-1].content.split("Say ")[-1].split()[0]
                out.append([Generation(text=f"Answer: {word}", prompt_tokens=10, completion_tokens=5)] * r.n)
        return out


class FakeLearner:
    """run_episode: `rollouts` calls of the guarded LM; correct when the answer matches the reference."""

    def __init__(self, lm: GuardedLM, rollouts: int = 2) -> None:
        self.lm = lm
        self.rollouts = rollouts
        self.runs: list[str] = []
        self.fail_ids: set[str] = set()

    def respond(self, task: Task, budget: Budget, learn: bool = True) -> Episode:
        return self.run_episode(task, learn and task.answer is not None, budget)

    def run_episode(self, task: Task, train: bool, budget: Budget) -> Episode:
        self.runs.append(task.id)
        if task.id in self.fail_ids:
            raise RuntimeError(f"cannot solve {task.id}")
        answer = None
        for _ in range(self.rollouts):
            if not budget.allows(1):
                break
            gens = self.lm.generate([GenRequest.chat(task.prompt)])[0]
            budget.charge(gens, rollouts=1)
            if gens[0].finish_reason != "error":
                answer = gens[0].text.removeprefix("Answer: ")
        score = 1.0 if task.answer is not None and answer == task.answer else 0.0
        return Episode(id=f"ep-{len(self.runs)}", task=task, answer=answer, reward=Reward(score=score),
                       insights_used=["ins-1"], rollouts=budget.rollouts,
                       prompt_tokens=budget.prompt_tokens, completion_tokens=budget.completion_tokens)


def make(run_dir: Path, clock: Clock | None = None, practice=None, rollouts: int = 2, **daemon_cfg):
    cfg = Config()
    fast = {"inbox_settle_s": 0.0, "status_every_s": 0.0, "lm_backoff_s": 0.0}
    cfg.daemon = cfg.daemon.model_copy(update={**fast, **daemon_cfg})
    stats, stop, lm = CallStats(), threading.Event(), FakeLM()
    guarded = GuardedLM(lm, stats, stop, retries=1, backoff_s=0.0, sleep=lambda s: None)
    learner = FakeLearner(guarded, rollouts)
    clock = clock or Clock()
    d = Daemon(run_dir, cfg, learner, stats=stats, stop=stop, clock=clock, rng=random.Random(0),
               practice=practice, memory_version=lambda: 7, checkpoint=lambda: None)
    return d, lm, learner


def task_line(i: int | str, answer: str = "4", **kw) -> str:
    obj = {"id": f"t{i}", "prompt": f"What is 2 + 2? Say {answer}", "answer": answer, "verifier": "exact",
           **kw}
    return json.dumps(obj)


def drop(run_dir: Path, name: str, lines: list[str] | bytes) -> Path:
    path = run_dir / "inbox" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lines if isinstance(lines, bytes) else ("\n".join(lines) + "\n").encode())
    return path


def outbox(run_dir: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "outbox" / name).read_text().splitlines()]


def drain(d: Daemon, limit: int = 50) -> list[str]:
    kinds = []
    for _ in range(limit):
        step = d.run_once()
        kinds.append(step.kind)
        if step.kind in ("idle", "paused"):
            break
    return kinds


def test_inbox_file_moves_through_processing_to_done_with_outbox(tmp_path: Path) -> None:
    d, _, learner = make(tmp_path)
    drop(tmp_path, "a.jsonl", [task_line(1), task_line(2, answer="5"), task_line(3)])
    assert d.run_once().kind == "task"
    assert (tmp_path / "processing" / "a.jsonl").exists() and not (tmp_path / "inbox" / "a.jsonl").exists()
    assert drain(d) == ["task", "task", "idle"]
    assert (tmp_path / "done" / "a.jsonl").exists() and not (tmp_path / "processing" / "a.jsonl").exists()
    rows = outbox(tmp_path, "a.jsonl")
    assert [r["id"] for r in rows] == ["t1", "t2", "t3"]
    assert rows[0]["answer"] == "4" and rows[0]["reward"] == 1.0 and rows[0]["correct"] is True
    assert rows[0]["insights_used"] == ["ins-1"] and rows[0]["episode_id"].startswith("ep-")
    assert learner.runs == ["t1", "t2", "t3"]
    st = read_status(tmp_path)
    assert st is not None and st.counters.done == 3 and st.counters.pending == 0 and st.state == "idle"
    assert st.memory_version == 7 and st.accuracy == 1.0 and st.accuracy_n == 3


def test_same_name_dropped_twice_gets_a_fresh_name(tmp_path: Path) -> None:
    d, _, _ = make(tmp_path)
    drop(tmp_path, "a.jsonl", [task_line(1)])
    drain(d)
    drop(tmp_path, "a.jsonl", [task_line(1, answer="9")])
    drain(d)
    assert (tmp_path / "done" / "a.jsonl").exists() and (tmp_path / "done" / "a.2.jsonl").exists()
    assert outbox(tmp_path, "a.2.jsonl")[0]["answer"] == "9"


def test_bad_lines_go_to_failed_with_reasons_and_good_lines_proceed(tmp_path: Path) -> None:
    d, _, learner = make(tmp_path, max_prompt_chars=200)
    lines = [task_line(1).encode(), b"{not json", json.dumps({"id": "u", "prompt": "p", "answer": "1",
                                                             "verifier": "sympy"}).encode(),
             b'{"id": "bad\xff", "prompt": "x", "answer": "1", "verifier": "exact"}',
             task_line(5, answer="x" * 10, extra="no").encode(),
             json.dumps({"id": "big", "prompt": "y" * 300, "answer": "1", "verifier": "exact"}).encode(),
             task_line(7).encode()]
    drop(tmp_path, "mixed.jsonl", b"\n".join(lines) + b"\n")
    assert drain(d) == ["task", "task", "idle"]
    assert learner.runs == ["t1", "t7"]
    rejected = tmp_path / "failed" / "mixed.rejected.jsonl"
    side = json.loads((tmp_path / "failed" / "mixed.rejected.jsonl.error.json").read_text())
    reasons = {p["line"]: p["reason"] for p in side["problems"]}
    assert sorted(reasons) == [2, 3, 4, 5, 6] and side["file"] == "mixed.jsonl"
    assert "bad JSON" in reasons[2] and "unknown verifier 'sympy'" in reasons[3]
    assert "invalid UTF-8" in reasons[4] and "unknown key" in reasons[5] and "max_prompt_chars" in reasons[6]
    assert rejected.read_bytes().count(b"\n") == 5 and b"\xff" in rejected.read_bytes()
    assert [r["id"] for r in outbox(tmp_path, "mixed.jsonl")] == ["t1", "t7"]
    assert (tmp_path / "done" / "mixed.jsonl").exists()
    st = read_status(tmp_path)
    assert st is not None and st.counters.done == 2 and st.counters.failed == 5


@pytest.mark.parametrize("name,body,why", [
    ("junk.jsonl", b"\x89PNG\r\n\x1a\n\xff\xfe garbage", "no valid task"),
    ("empty.jsonl", b"\n\n", "empty"),
    ("tasks.csv", b"id,prompt\n1,2\n", "not a .jsonl file"),
])
def test_malformed_files_fail_whole_and_daemon_keeps_running(tmp_path: Path, name: str, body: bytes,
                                                             why: str) -> None:
    d, _, learner = make(tmp_path)
    drop(tmp_path, name, body)
    drop(tmp_path, "good.jsonl", [task_line(1)])
    assert drain(d) == ["task", "idle"]
    assert (tmp_path / "failed" / name).read_bytes() == body
    side = json.loads((tmp_path / "failed" / f"{name}.error.json").read_text())
    assert why in side["reason"]
    assert learner.runs == ["t1"] and (tmp_path / "done" / "good.jsonl").exists()
    st = read_status(tmp_path)
    assert st is not None and st.counters.files_failed == 1 and st.counters.files_done == 1


def test_resume_after_crash_skips_finished_retries_in_flight_and_repairs_outbox(tmp_path: Path) -> None:
    d, _, _ = make(tmp_path)
    drop(tmp_path, "a.jsonl", [task_line(i) for i in range(4)])
    assert d.run_once().kind == "task" and d.run_once().kind == "task"
    # a crash: the process dies mid-append of the next outbox line, after a duplicate was written
    with open(tmp_path / "outbox" / "a.jsonl", "a") as f:
        f.write(json.dumps({"id": "t1", "answer": "dup"}) + "\n" + '{"id": "t2", "ans')
    d2, _, learner2 = make(tmp_path)
    assert drain(d2) == ["task", "task", "idle"]
    assert learner2.runs == ["t2", "t3"]
    rows = outbox(tmp_path, "a.jsonl")
    assert [r["id"] for r in rows] == ["t0", "t1", "t2", "t3"] and rows[1]["answer"] == "4"


def test_crash_between_claim_and_bookkeeping_and_after_commit(tmp_path: Path) -> None:
    # a file moved to processing/ by a process that died before recording it is still processed
    (tmp_path / "processing").mkdir(parents=True)
    (tmp_path / "processing" / "b.jsonl").write_text(task_line(1) + "\n" + task_line(2) + "\n")
    d, _, _ = make(tmp_path)
    d.inbox.append_outbox = lambda name, result: (_ for _ in ()).throw(SystemExit("killed after commit"))
    with pytest.raises(SystemExit):
        d.run_once()
    d2, _, learner2 = make(tmp_path)
    assert drain(d2) == ["task", "idle"]
    assert learner2.runs == ["t2"]  # t1 was committed: not run again
    assert [r["id"] for r in outbox(tmp_path, "b.jsonl")] == ["t1", "t2"]


def test_lock_refuses_second_daemon_and_recovers_stale_lock(tmp_path: Path) -> None:
    lock = RunLock(tmp_path)
    assert lock.acquire() is None
    assert lock_holder(tmp_path) is not None
    with pytest.raises(DaemonLocked, match=r"pid \d+\) is already running"):
        RunLock(tmp_path).acquire()
    lock.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / "daemon.lock").write_text(f"{dead_pid}\n")
    assert lock_holder(tmp_path) is None
    again = RunLock(tmp_path)
    assert again.acquire() == dead_pid
    again.release()


def test_rollout_cap_pauses_until_the_window_slides_and_survives_restart(tmp_path: Path) -> None:
    clock = Clock()
    d, _, _ = make(tmp_path, clock, rollouts_per_hour=4)
    drop(tmp_path, "a.jsonl", [task_line(i) for i in range(3)])
    assert d.run_once().kind == "task"
    clock.t += 60
    assert d.run_once().kind == "task"
    step = d.run_once()
    assert step.kind == "paused" and "rollouts/hour cap" in step.detail and "resumes at" in step.detail
    st = read_status(tmp_path)
    assert st is not None and st.state.startswith("paused: rollouts/hour cap")
    assert st.budget["rollouts"].used == 4 and st.budget["rollouts"].left == 0
    assert st.paused_until == pytest.approx(clock.t - 60 + 3600)
    d2, _, learner2 = make(tmp_path, clock, rollouts_per_hour=4)  # the window is persisted
    assert d2.run_once().kind == "paused"
    clock.t += 3600 - 60 + 1  # the first episode's spend has left the window
    assert d2.run_once().kind == "task" and learner2.runs == ["t2"]


def test_episode_budget_is_capped_by_what_is_left(tmp_path: Path) -> None:
    d, _, _ = make(tmp_path, rollouts=5, rollouts_per_hour=3)
    drop(tmp_path, "a.jsonl", [task_line(1)])
    d.run_once()
    assert outbox(tmp_path, "a.jsonl")[0]["rollouts"] == 3


def test_failing_backend_pauses_without_failing_inbox_tasks(tmp_path: Path) -> None:
    clock = Clock()
    d, lm, _ = make(tmp_path, clock, backend_fail_after=2, backend_pause_s=100.0)
    drop(tmp_path, "a.jsonl", [task_line(1), task_line(2)])
    lm.mode = "error"
    assert d.run_once().kind == "backend_failed"
    assert lm.calls == 4  # two rollouts, each retried once by the guard
    assert d.run_once().kind == "backend_failed"
    step = d.run_once()
    assert step.kind == "paused" and "backend failing: HTTP 503: overloaded" in step.detail
    st = read_status(tmp_path)
    assert st is not None and st.state.startswith("paused: backend failing") and st.counters.failed == 0
    assert not any((tmp_path / "failed").iterdir()) and (tmp_path / "processing" / "a.jsonl").exists()
    lm.mode = "ok"
    clock.t += 101
    assert drain(d) == ["task", "task", "idle"]
    assert [r["answer"] for r in outbox(tmp_path, "a.jsonl")] == ["4", "4"]


def test_raising_backend_counts_as_backend_failure(tmp_path: Path) -> None:
    d, lm, learner = make(tmp_path, backend_fail_after=1)
    drop(tmp_path, "a.jsonl", [task_line(1)])
    lm.mode = "raise"
    step = d.run_once()
    assert step.kind == "backend_failed" and "ConnectionError" in step.detail
    assert d.run_once().kind == "paused"


def test_task_that_keeps_raising_is_failed_after_max_attempts(tmp_path: Path) -> None:
    d, _, learner = make(tmp_path, max_task_attempts=2)
    learner.fail_ids = {"t1"}
    drop(tmp_path, "a.jsonl", [task_line(1), task_line(2)])
    assert drain(d) == ["retry", "task_failed", "task", "idle"]
    rows = outbox(tmp_path, "a.jsonl")
    assert rows[0]["id"] == "t1" and "failed after 2 attempts: RuntimeError" in rows[0]["error"]
    assert rows[1]["answer"] == "4"
    st = read_status(tmp_path)
    assert st is not None and st.counters.failed == 1 and st.counters.done == 1 and "t1" in st.last_error


def test_stop_request_abandons_episode_which_is_retried_next_start(tmp_path: Path) -> None:
    d, lm, _ = make(tmp_path)
    drop(tmp_path, "a.jsonl", [task_line(1)])
    lm.on_call = d.stop.set  # SIGTERM arrives during the first LM call
    assert d.run_once().kind == "abandoned"
    assert lm.calls == 1 and d.run_once().kind == "stopped"
    d.close()
    assert read_status(tmp_path).state == "stopped"  # type: ignore[union-attr]
    d2, _, learner2 = make(tmp_path)
    assert drain(d2) == ["task", "idle"] and learner2.runs == ["t1"]


def test_guard_retries_errored_batches_then_returns_errors() -> None:
    stats, stop, lm = CallStats(), threading.Event(), FakeLM()
    waits: list[float] = []
    g = GuardedLM(lm, stats, stop, retries=2, backoff_s=0.5, sleep=waits.append)
    lm.mode = "error"
    out = g.generate([GenRequest.chat("Say 1")])
    assert out[0][0].finish_reason == "error" and lm.calls == 3 and len(waits) == 2 and stats.all_failed
    lm.mode, lm.calls = "ok", 0
    stats.reset()
    assert g.generate([GenRequest.chat("Say 1")])[0][0].text == "Answer: 1" and not stats.all_failed
    stop.set()
    with pytest.raises(StopRequested):
        g.generate([GenRequest.chat("Say 1")])
    assert g.name == "fake"  # other attributes come from the wrapped backend


def test_practice_is_failure_biased_and_skips_mastered(tmp_path: Path) -> None:
    tasks = [("s:easy", Task(id="easy", family="s", prompt="Say 1", answer="1")),
             ("s:hard", Task(id="hard", family="s", prompt="Say 1", answer="2"))]
    d, _, learner = make(tmp_path, practice=lambda: tasks, mastery_streak=2)
    kinds = [d.run_once().kind for _ in range(30)]
    assert set(kinds) == {"practice"}
    assert learner.runs.count("easy") == 2  # mastered after two correct runs, then never again
    assert learner.runs.count("hard") == 28
    st = read_status(tmp_path)
    assert st is not None and st.counters.practice == 30
    drop(tmp_path, "a.jsonl", [task_line(1)])
    assert d.run_once().kind == "task"  # the inbox comes first


def test_bad_practice_suite_is_reported_and_inbox_still_served(tmp_path: Path) -> None:
    def broken():
        raise ValueError("unknown suite 'nope'")

    d, _, _ = make(tmp_path, practice=broken)
    assert d.run_once().kind == "idle"
    assert "unknown suite" in read_status(tmp_path).last_error  # type: ignore[union-attr,operator]
    drop(tmp_path, "a.jsonl", [task_line(1)])
    assert d.run_once().kind == "task"


def test_json_logs_record_steps_and_loop_events(tmp_path: Path) -> None:
    from insightloop.core.events import EpisodeStarted

    d, _, _ = make(tmp_path)
    d.on_event(EpisodeStarted(episode_id="e1", task_id="t1", family="f", train=True))
    drop(tmp_path, "a.jsonl", [task_line(1), "{bad"])
    drain(d)
    d.close()
    records = [json.loads(line) for line in (tmp_path / "logs" / "daemon.jsonl").read_text().splitlines()]
    msgs = [r["msg"] for r in records]
    assert {"episode_started", "claimed", "lines_rejected", "task_done", "file_done", "stopped"} <= set(msgs)
    assert next(r for r in records if r["msg"] == "episode_started")["event"]["task_id"] == "t1"


def test_serve_runs_until_idle_on_a_worker_thread(tmp_path: Path) -> None:
    d, _, learner = make(tmp_path, poll_seconds=0.05)
    drop(tmp_path, "a.jsonl", [task_line(1), task_line(2)])
    assert serve(d, exit_when_idle=True) is False
    assert learner.runs == ["t1", "t2"] and read_status(tmp_path).state == "stopped"  # type: ignore[union-attr]


def test_status_command_prints_table_and_json(tmp_path: Path) -> None:
    from insightloop.apps.cli.main import app
    from typer.testing import CliRunner

    d, _, _ = make(tmp_path, rollouts_per_hour=100)
    drop(tmp_path, "a.jsonl", [task_line(1), "{bad"])
    drain(d)
    d.close()
    runner = CliRunner()
    out = runner.invoke(app, ["status", "--run-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["running"] is False and data["counters"]["done"] == 1 and data["counters"]["failed"] == 1
    table = runner.invoke(app, ["status", "--run-dir", str(tmp_path)], env={"COLUMNS": "120"})
    assert table.exit_code == 0
    assert "1 done, 1 failed, 0 pending" in table.output and "2 used (cap 100, 98 left)" in table.output
    missing = runner.invoke(app, ["status", "--run-dir", str(tmp_path / "nope")])
    assert missing.exit_code == 1 and "no status.json" in missing.output


def test_checkpoint_sync_loads_current_weights_once_and_after_a_fold(tmp_path: Path) -> None:
    from insightloop.apps.daemon.run import CheckpointSync
    from insightloop.rl import checkpoints

    class Loadable(FakeLM):
        def __init__(self) -> None:
            super().__init__()
            self.loaded: list[Path] = []

        def load_weights(self, path: Path) -> None:
            self.loaded.append(Path(path))

    lm = Loadable()
    sync = CheckpointSync(tmp_path, GuardedLM(lm, CallStats(), threading.Event()))
    assert sync() is None and lm.loaded == []
    for n in ("1", "2"):
        folder = checkpoints.checkpoints_dir(tmp_path) / n
        folder.mkdir(parents=True)
        (folder / checkpoints.MANIFEST).write_text("{}")
    checkpoints.set_current(tmp_path, checkpoints.checkpoints_dir(tmp_path) / "1")
    assert sync() == "1" and sync() == "1" and [p.name for p in lm.loaded] == ["1"]
    checkpoints.set_current(tmp_path, checkpoints.checkpoints_dir(tmp_path) / "2")
    assert sync() == "2" and [p.name for p in lm.loaded] == ["1", "2"]


def test_json_log_rotates(tmp_path: Path) -> None:
    from insightloop.apps.daemon.status import close_log, open_log

    log = open_log(tmp_path, max_bytes=10_000, backups=2)
    for i in range(400):
        log.info("tick", extra={"data": {"i": i, "pad": "x" * 50}})
    close_log(log)
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["daemon.jsonl", "daemon.jsonl.1", "daemon.jsonl.2"]
    assert all(json.loads(line)["msg"] == "tick" for line in (tmp_path / "logs" / "daemon.jsonl.1").open())


def test_lock_error_is_a_user_error_with_exit_code_3(tmp_path: Path) -> None:
    from insightloop.core.errors import UserError

    lock = RunLock(tmp_path)
    lock.acquire()
    with pytest.raises(UserError) as info:
        RunLock(tmp_path).acquire()
    lock.release()
    assert isinstance(info.value, DaemonLocked) and info.value.exit_code == 3


def test_refused_line_numbers_come_from_the_parser_not_a_search_by_id(tmp_path: Path) -> None:
    d, _, learner = make(tmp_path, max_prompt_chars=200)
    lines = [json.dumps({"id": "big", "prompt": "p", "answer": "1", "verifier": "sympy"}),
             json.dumps({"id": "big", "prompt": "y" * 300, "answer": "1", "verifier": "exact"}),
             task_line(3)]
    drop(tmp_path, "dup.jsonl", lines)
    assert drain(d) == ["task", "idle"] and learner.runs == ["t3"]
    side = json.loads((tmp_path / "failed" / "dup.rejected.jsonl.error.json").read_text())
    assert [p["line"] for p in side["problems"]] == [1, 2]
    assert "sympy" in side["problems"][0]["reason"] and "max_prompt_chars" in side["problems"][1]["reason"]
    rejected = (tmp_path / "failed" / "dup.rejected.jsonl").read_text().splitlines()
    assert rejected == lines[:2]


DAMAGED_STATUS = [
    (b'{"state": "idle", "counters": {"done": 3', "invalid JSON"),
    (b'{"state": "caf\xe9"}', "not UTF-8: byte 0xe9"),
    (b'{"state": "idle", "counters": {"done": "many"}}', "not a status record: counters.done"),
    (b"", "invalid JSON"),
]


@pytest.mark.parametrize("body,why", DAMAGED_STATUS)
def test_damaged_status_json_reads_as_unreadable(tmp_path: Path, body: bytes, why: str) -> None:
    from insightloop.apps.daemon.status import UnreadableStatus

    (tmp_path / "status.json").write_bytes(body)
    st = read_status(tmp_path)
    assert isinstance(st, UnreadableStatus) and why in st.reason
    assert st.state.startswith("status.json is unreadable") and st.pid == 0
    assert st.updated_at == pytest.approx((tmp_path / "status.json").stat().st_mtime)


def test_missing_and_good_status_json_read_as_before(tmp_path: Path) -> None:
    from insightloop.apps.daemon.status import DaemonStatus, UnreadableStatus, write_status

    assert read_status(tmp_path) is None
    write_status(tmp_path, DaemonStatus(state="idle", pid=42))
    st = read_status(tmp_path)
    assert st is not None and not isinstance(st, UnreadableStatus) and st.state == "idle" and st.pid == 42


def test_status_command_reports_an_unreadable_status_json(tmp_path: Path) -> None:
    from insightloop.apps.cli.main import app
    from typer.testing import CliRunner

    (tmp_path / "status.json").write_bytes(b"\xff\xfe{garbage")
    runner = CliRunner()
    out = runner.invoke(app, ["status", "--run-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.output)
    assert data["state"].startswith("status.json is unreadable") and data["running"] is False
    table = runner.invoke(app, ["status", "--run-dir", str(tmp_path)], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "status.json is unreadable" in table.output
    assert "no daemon has run" not in table.output + out.output


def test_daemon_start_replaces_an_unreadable_status_json(tmp_path: Path) -> None:
    import logging

    from insightloop.apps.daemon.run import write_starting_status
    from insightloop.apps.daemon.status import UnreadableStatus

    (tmp_path / "status.json").write_bytes(b"{not json")
    write_starting_status(tmp_path, 1000.0, logging.getLogger("test-daemon-start"))
    st = read_status(tmp_path)
    assert st is not None and not isinstance(st, UnreadableStatus)
    assert st.state == "starting: loading models" and st.started_at == 1000.0 and st.counters.done == 0
    (tmp_path / "status.json").write_bytes(b"{not json")
    d, _, _ = make(tmp_path)  # the daemon's first status write replaces it too
    drop(tmp_path, "a.jsonl", [task_line(1)])
    d.run_once()
    st = read_status(tmp_path)
    assert st is not None and not isinstance(st, UnreadableStatus) and st.counters.done == 1


def test_daemon_start_keeps_the_last_counters(tmp_path: Path) -> None:
    import logging

    from insightloop.apps.daemon.run import write_starting_status

    d, _, _ = make(tmp_path)
    drop(tmp_path, "a.jsonl", [task_line(1), task_line(2)])
    drain(d)
    d.close()
    write_starting_status(tmp_path, 2000.0, logging.getLogger("test-daemon-start"))
    st = read_status(tmp_path)
    assert st is not None and st.state == "starting: loading models" and st.counters.done == 2


def test_the_guard_keeps_a_backends_ability_to_score() -> None:
    from insightloop.apps.daemon.guard import GuardedScorer, guard
    from insightloop.core.lm import Scorer, ScoreRequest, Scores

    class Scoring:
        name = "scoring"

        def generate(self, reqs: list) -> list:
            return [[] for _ in reqs]

        def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
            return [Scores(logprobs=[-1.0], tokens=[1], prompt_tokens=3) for _ in reqs]

    class Plain:
        name = "plain"

        def generate(self, reqs: list) -> list:
            return [[] for _ in reqs]

    stop = threading.Event()
    scorer = guard(Scoring(), CallStats(), stop)
    assert isinstance(scorer, GuardedScorer) and isinstance(scorer, Scorer)
    req = ScoreRequest(messages=(), continuations=(" Yes",))
    assert scorer.score([req])[0].logprobs == [-1.0]  # type: ignore[attr-defined]
    assert not isinstance(guard(Plain(), CallStats(), stop), Scorer)
    stop.set()
    with pytest.raises(StopRequested):
        scorer.score([req])  # type: ignore[attr-defined]
