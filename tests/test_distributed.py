"""The distributed run on fakes, in one process: the writer protocol (batches, exact versions, the
`Memory` protocol by proxy), the driver's scheduling and fault handling over a local pool (every
task answered once across a dead worker, a failing worker and a driver restart), folds, and the
harness over workers. No Ray: the single-process path must never import it."""

from __future__ import annotations

import hashlib
import json
import random
import subprocess
import sys
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from insightloop.agent.learn.loop import Learner
from insightloop.apps.daemon.status import read_status
from insightloop.apps.distributed.cluster import RayOptionError, requested_workers
from insightloop.apps.distributed.coordinator import Coordinator, WriterLost
from insightloop.apps.distributed.evaluation import EvalWorker, run_eval_on_workers
from insightloop.apps.distributed.folding import FoldScheduler, FoldSummary
from insightloop.apps.distributed.jobs import share
from insightloop.apps.distributed.pool import LocalPool
from insightloop.apps.distributed.protocol import AttemptOp, CreditOp, Reply, Request, WriteBatch
from insightloop.apps.distributed.proxy import ProxyMemory
from insightloop.apps.distributed.worker import EpisodeOrder, EpisodeWorker
from insightloop.apps.distributed.writer import MemoryService
from insightloop.apps.runtime import Runtime
from insightloop.core.budget import Budget
from insightloop.core.config import Config, RayConfig, load_config
from insightloop.core.episode import Episode
from insightloop.core.lm import Generation, GenRequest
from insightloop.core.task import Reward, Task
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.records import EvalSpec
from insightloop.evals.harness.runner import run_eval
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.records import Attempt
from insightloop.memory.store import MemoryStore

LESSON = "When adding numbers, carry the tens digit before writing the answer."


def _h(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16)


class FakeLM:
    """Policy and analyst in one (deterministic): right when the prompt holds the lesson or a worked
    example, else about one time in three when sampling; the analyst writes the lesson."""

    name = "fake"

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        return [[self._one(r, i) for i in range(r.n)] for r in reqs]

    def _one(self, req: GenRequest, i: int) -> Generation:
        system, user = req.messages[0].content, req.messages[-1].content
        if "compare two attempts" in system:
            lesson = LESSON.removeprefix("When") if req.assistant_prefix.endswith("When") else " lost the carry"
            return Generation(text=lesson, prompt_tokens=40, completion_tokens=10)
        answer = user.split("=")[-1].strip()
        helped = len(req.messages) > 2 or "carry the tens" in system
        lucky = req.temperature > 0 and _h(req.seed, i, req.assistant_prefix, user) % 3 == 0
        body = " add.\n\nAnswer: " + (answer if helped or lucky else "0")
        return Generation(text=body, prompt_tokens=sum(len(m.content) for m in req.messages) // 4,
                          completion_tokens=5)


def sums(n: int, start: int = 0) -> list[Task]:
    return [Task(id=f"s{i}", family="arith", prompt=f"Add {i} and {i + 7}. {i} + {i + 7} = {2 * i + 7}",
                 answer=str(2 * i + 7), verifier="numeric") for i in range(start, start + n)]


def cfg_of(*extra: str) -> Config:
    return load_config(None, ["search.strategy=sample", "search.rollouts=3", "loop.baseline_samples=1",
                              "loop.pairs=2", "loop.max_candidates=1", "memory.top_k=3", "memory.embedder=hashing",
                              "daemon.inbox_settle_s=0", "daemon.status_every_s=0.001", "daemon.lm_backoff_s=0",
                              "daemon.poll_seconds=0.01", *extra])


def open_store(path: Path, cfg: Config) -> MemoryStore:
    return MemoryStore.open(path, HashingEmbedder(64), cfg.memory, rng=random.Random(0), clock=lambda: 1.0)


# -- the memory: batches and the writer protocol ----------------------------------------------------

def test_a_batch_commits_once_and_keeps_one_event_and_version_per_write(tmp_path: Path) -> None:
    cfg = cfg_of()
    with open_store(tmp_path, cfg) as store:
        ins, _ = store.add_insight(LESSON, "strategy", status="active")
        v0 = store.version
        with store.batch():
            store.credit([ins.id], sums(1)[0], 1.0, 0.5, "ep-1")
            store.add_attempt(Attempt(task_id="s0", task_text="Add", text="Answer: 7", reward=1.0))
            store.set_baseline("s0", 0.5, 2)
        assert [(e.version, e.kind) for e in store.events(v0)] == [
            (v0 + 1, "credit"), (v0 + 2, "attempt"), (v0 + 3, "baseline")]
        with pytest.raises(RuntimeError), store.batch():  # a failing batch leaves nothing behind
            store.credit([ins.id], sums(1)[0], 0.0, 0.5, "ep-2")
            store.add_insight("When subtracting, borrow from the next digit first.", "strategy", status="active")
            raise RuntimeError("boom")
        assert store.version == v0 + 3 and store.get(ins.id).uses == 1
        assert [i.text for i in store.retrieve(sums(1)[0], 5)] == [LESSON]  # the index forgot the rolled-back row
        assert store.add_insight("When subtracting, borrow from the next digit first.", "strategy")[1]


def test_the_writer_applies_a_batch_once_and_answers_after_it(tmp_path: Path) -> None:
    cfg = cfg_of()
    with open_store(tmp_path, cfg) as store:
        ins, _ = store.add_insight(LESSON, "strategy", status="active")
        writer = MemoryService(store)
        batch = WriteBatch(source="w1", seq=1, ops=[
            CreditOp(insight_ids=[ins.id], task=sums(1)[0], reward=1.0, baseline=0.0, episode_id="e1"),
            AttemptOp(attempt=Attempt(task_id="s0", task_text="Add 0 and 7", text="Answer: 7", reward=1.0))])
        first = writer.exchange(batch)
        assert first.applied == 2 and first.version == 3
        again = writer.exchange(batch)  # a resend (its answer was lost): never applied twice
        assert again.applied == 0 and again.version == 3 and store.get(ins.id).uses == 1
        stats = writer.stats()
        assert stats.batches == 1 and stats.duplicates == 1 and stats.ops == {"credit": 1, "attempt": 1}


def test_a_failed_exchange_drops_the_batch_and_rolls_it_back(tmp_path: Path) -> None:
    cfg = cfg_of()
    with open_store(tmp_path, cfg) as store:
        ins, _ = store.add_insight(LESSON, "strategy", status="active")
        writer = MemoryService(store)
        proxy = ProxyMemory(writer.exchange, "w1")
        real = store.add_episode
        store.add_episode = lambda ep: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
        proxy.credit([ins.id], sums(1)[0], 1.0, 0.0, "e1")
        proxy.add_episode(Episode(id="e1", task=sums(1)[0]))
        with pytest.raises(OSError):
            proxy.flush()
        assert proxy.pending == 0 and store.version == 1 and store.get(ins.id).uses == 0
        store.add_episode = real  # type: ignore[method-assign]
        proxy.credit([ins.id], sums(1)[0], 1.0, 0.0, "e2")
        assert proxy.flush() == 1 and store.get(ins.id).uses == 1 and proxy.version == 2


class Counting:
    """A transport that counts exchanges and the writes they carried."""

    def __init__(self, writer: MemoryService) -> None:
        self.writer, self.exchanges, self.writes = writer, 0, 0

    def __call__(self, batch: WriteBatch | None, request: Request | None) -> Reply:
        self.exchanges += 1
        self.writes += len(batch.ops) if batch else 0
        return self.writer.exchange(batch, request)


def _learn(store_dir: Path, through_writer: bool) -> tuple[MemoryStore, Counting | None]:
    cfg = cfg_of()
    store = open_store(store_dir, cfg)
    transport = Counting(MemoryService(store)) if through_writer else None
    memory: Any = ProxyMemory(transport, "w1", 64) if transport is not None else store
    learner = Learner(FakeLM(), FakeLM(), memory, cfg, random.Random(3), run_dir=store_dir)
    learner.train(sums(6), Budget(max_rollouts=60))
    if isinstance(memory, ProxyMemory):
        memory.flush()
    return store, transport


def test_the_learner_through_the_writer_leaves_the_memory_a_single_process_leaves(tmp_path: Path) -> None:
    direct, _ = _learn(tmp_path / "direct", through_writer=False)
    proxied, transport = _learn(tmp_path / "proxied", through_writer=True)
    with direct, proxied:
        def state(s: MemoryStore) -> tuple:
            insights = sorted((i.text, i.status, i.uses, round(i.utility_sum, 9)) for i in s.list_insights())
            events = [(e.version, e.kind) for e in s.versions()]
            return insights, events, len(s.list_attempts()), len(s.list_episodes())

        assert state(proxied) == state(direct)
        assert any(i.status == "active" for i in direct.list_insights())  # the loop did learn something
        assert transport is not None and transport.writes > 0
        assert transport.exchanges < proxied.version  # writes travelled in batches


# -- the driver over a local pool --------------------------------------------------------------------

class Flaky(EpisodeWorker):
    """A worker that dies (raises: a crash to the local pool) or fails its first `n` episodes."""

    def __init__(self, *args: Any, die: int = 0, fail: int = 0, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.die, self.fail = die, fail

    def run(self, order: EpisodeOrder) -> Any:
        if self.die:
            self.die -= 1
            raise SystemError("worker process killed")
        reply = super().run(order)
        if self.fail:
            self.fail -= 1
            reply.outcome = reply.outcome.model_copy(update={"episode": None, "error": "RuntimeError: bad GPU"})
        return reply


def drive(run_dir: Path, cfg: Config, store: MemoryStore, faults: dict[str, dict[str, int]] | None = None,
          steps: int = 200, until_idle: bool = True) -> Coordinator:
    writer = MemoryService(store)

    def make(name: str, slot: int) -> EpisodeWorker:
        return Flaky(cfg, name, writer.exchange, run_dir.parent / f"scratch-{name}", seed=slot, policy=FakeLM(),
                     **(faults or {}).get(name, {}))

    co = Coordinator(run_dir, cfg, LocalPool(2, make), memory_version=lambda: store.version, rng=random.Random(0))
    for _ in range(steps):
        step = co.run_once()
        if until_idle and step.kind == "idle":
            break
    return co


def inbox(run_dir: Path, name: str, tasks: list[Task]) -> None:
    (run_dir / "inbox").mkdir(parents=True, exist_ok=True)
    lines = [t.model_dump_json(include={"id", "prompt", "answer", "verifier", "family"}) for t in tasks]
    (run_dir / "inbox" / name).write_text("\n".join(lines) + "\n")


def outbox_ids(run_dir: Path, name: str) -> list[str]:
    return [json.loads(line)["id"] for line in (run_dir / "outbox" / name).read_text().splitlines()]


def test_every_inbox_task_is_answered_once_by_the_workers(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", cfg_of()
    inbox(run, "a.jsonl", sums(5))
    inbox(run, "b.jsonl", sums(3, start=10))
    with open_store(run, cfg) as store:
        co = drive(run, cfg, store)
        co.close()
        assert sorted(outbox_ids(run, "a.jsonl")) == [f"s{i}" for i in range(5)]
        assert sorted(outbox_ids(run, "b.jsonl")) == ["s10", "s11", "s12"]
        assert sorted(p.name for p in (run / "done").iterdir()) == ["a.jsonl", "b.jsonl"]
        phases = sorted(ep.meta.get("phase") for ep in store.list_episodes())  # all writes reached the writer
        assert phases == ["answer"] * 8 + ["train"] * 8  # each labeled task: answered, then learned from
    st = read_status(run)
    assert st is not None and st.counters.done == 8 and [w.episodes for w in st.workers] != [0, 0]
    assert {w.name for w in st.workers} == {"w1", "w2"} and all(w.state == "stopped" for w in st.workers)


def test_a_dead_worker_is_replaced_and_its_task_answered_once_by_another(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", cfg_of()
    inbox(run, "a.jsonl", sums(4))
    with open_store(run, cfg) as store:
        co = drive(run, cfg, store, faults={"w1": {"die": 1}})
        logs = co.run_dir / "logs" / "daemon.jsonl"
        co.close()
    assert sorted(outbox_ids(run, "a.jsonl")) == [f"s{i}" for i in range(4)]
    st = read_status(run)
    assert st is not None and st.counters.done == 4 and st.counters.failed == 0
    w1 = st.workers[0]
    assert w1.name == "w1.2" and w1.replaced == 1 and "died running a.jsonl:s0" in (w1.note or "")
    records = [json.loads(line) for line in logs.read_text().splitlines()]
    died = next(r for r in records if r["msg"] == "worker_died")
    retried = [r for r in records if r["msg"] == "task_done" and r["id"] == "s0"]
    assert died["task"] == "a.jsonl:s0" and len(retried) == 1


def test_a_worker_that_keeps_failing_is_replaced_and_status_says_so(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", cfg_of("ray.worker_fail_after=2")
    inbox(run, "a.jsonl", sums(6))
    with open_store(run, cfg) as store:
        drive(run, cfg, store, faults={"w2": {"fail": 5}}).close()
    assert sorted(outbox_ids(run, "a.jsonl")) == [f"s{i}" for i in range(6)]
    st = read_status(run)
    assert st is not None and st.counters.done == 6 and st.counters.failed == 0
    w2 = st.workers[1]
    assert w2.name == "w2.2" and w2.replaced == 1
    assert w2.note is not None and w2.note.startswith("replaced after 2 failed episodes in a row")
    assert "bad GPU" in (st.last_error or "")


def test_a_restarted_driver_resumes_and_answers_each_task_once(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", cfg_of()
    inbox(run, "a.jsonl", sums(5))
    with open_store(run, cfg) as store:
        first = drive(run, cfg, store, steps=2, until_idle=False)  # some committed, two ran but never settled
        done_before = read_status(run).counters.done if read_status(run) else 0  # type: ignore[union-attr]
        assert first.jobs and done_before < 5
        first.con.close()  # the driver is gone (kill -9): nothing else of it runs
        drive(run, cfg, store).close()
    assert sorted(outbox_ids(run, "a.jsonl")) == [f"s{i}" for i in range(5)]


def test_a_lost_writer_stops_the_driver_without_charging_the_tasks(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", cfg_of()
    inbox(run, "a.jsonl", sums(4))
    alive = {"writer": True}

    def check() -> None:
        if not alive["writer"]:
            raise ConnectionError("ActorDiedError: the writer's process died")

    with open_store(run, cfg) as store:
        writer = MemoryService(store)
        pool = LocalPool(2, lambda name, slot: EpisodeWorker(cfg, name, writer.exchange, tmp_path / name,
                                                             policy=FakeLM()))
        co = Coordinator(run, cfg, pool, check_writer=check, rng=random.Random(0))
        co.run_once()  # two tasks handed out (and run by the local pool)
        alive["writer"] = False
        with pytest.raises(WriterLost, match="restart the daemon"):
            co.work()
        co.close()
    st = read_status(run)
    assert st is not None and st.counters.done == 0 and st.counters.failed == 0  # nothing settled, nothing charged
    assert st.state.startswith("stopped: the memory writer is gone") and "2 episode(s) in flight" in st.state


def test_with_an_empty_inbox_the_workers_practise(tmp_path: Path) -> None:
    run, cfg = tmp_path / "run", cfg_of()
    problems = [(f"sums:{t.id}", t) for t in sums(3)]
    with open_store(run, cfg) as store:
        writer = MemoryService(store)
        pool = LocalPool(2, lambda name, slot: EpisodeWorker(cfg, name, writer.exchange, tmp_path / name,
                                                             policy=FakeLM()))
        co = Coordinator(run, cfg, pool, practice=lambda: problems, rng=random.Random(0))
        for _ in range(4):
            co.run_once()
        co.close()
        assert len(store.list_episodes()) >= 6
    st = read_status(run)
    assert st is not None and st.counters.practice >= 6 and st.counters.done == 0


def test_workers_serve_the_checkpoint_the_gate_accepted(tmp_path: Path) -> None:
    class Reloading(FakeLM):
        def __init__(self) -> None:
            self.loads: list[str] = []

        def load_weights(self, path: str | Path) -> None:
            self.loads.append(str(path))

    run, cfg = tmp_path / "run", cfg_of()
    inbox(run, "a.jsonl", sums(4))
    folder = run / "checkpoints" / "1"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (run / "checkpoints" / "CURRENT").write_text("1\n")  # what an accepted fold's gate leaves
    lms: list[Reloading] = []

    def make(name: str, slot: int) -> EpisodeWorker:
        lms.append(Reloading())
        return EpisodeWorker(cfg, name, writer.exchange, tmp_path / name, policy=lms[-1])

    with open_store(run, cfg) as store:
        writer = MemoryService(store)
        co = Coordinator(run, cfg, LocalPool(2, make), rng=random.Random(0))
        for _ in range(6):
            co.run_once()
        co.close()
    assert [lm.loads for lm in lms] == [[str(folder)], [str(folder)]]  # each worker loaded it once
    st = read_status(run)
    assert st is not None and st.checkpoint == "1" and st.counters.done == 4


def test_each_running_episode_gets_an_equal_share_of_the_windows() -> None:
    left = Budget(max_rollouts=9, max_tokens=1000, max_usd=1.0, max_seconds=None)
    part = share(left, 2)
    assert (part.max_rollouts, part.max_tokens, part.max_usd, part.max_seconds) == (4, 500, 0.5, None)
    assert share(Budget(max_rollouts=1), 4).max_rollouts == 1  # never 0 of a count that is not 0
    assert share(Budget(max_rollouts=0), 2).max_rollouts == 0


def test_folds_start_every_n_training_episodes_one_at_a_time() -> None:
    import logging

    pending: list[Future] = []

    def submit() -> Future:
        pending.append(Future())
        return pending[-1]

    folds = FoldScheduler(2, submit, logging.getLogger("test-folds"))
    folds.trained()
    assert not pending
    folds.trained()
    folds.trained(3)  # due again, but one is running
    assert len(pending) == 1 and folds.poll() is None
    pending[0].set_result(FoldSummary(ok=True, accepted=True, checkpoint="/run/checkpoints/1"))
    summary = folds.poll()
    assert summary is not None and summary.accepted and folds.folds == 1
    folds.trained(2)
    pending[1].set_exception(RuntimeError("CUDA out of memory"))
    assert folds.wait(1.0) is not None and folds.last is not None and "out of memory" in (folds.last.error or "")


def test_an_episode_worker_reports_a_failing_backend_not_a_failing_task(tmp_path: Path) -> None:
    class Down:
        name = "down"

        def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
            return [[Generation(text="", finish_reason="error", error="HTTP 503")] * r.n for r in reqs]

    cfg = cfg_of("daemon.lm_retries=0")
    with open_store(tmp_path / "run", cfg) as store:
        worker = EpisodeWorker(cfg, "w1", MemoryService(store).exchange, tmp_path / "s", policy=Down())
        reply = worker.run(EpisodeOrder(key="k", task=sums(1)[0], train=True, budget=Budget(max_rollouts=5)))
    assert reply.outcome.backend_error == "HTTP 503" and reply.spend.rollouts >= 0 and reply.worker == "w1"


# -- the harness over workers ------------------------------------------------------------------------

def _suite(tmp_path: Path) -> str:
    path = tmp_path / "sums.jsonl"
    path.write_text("\n".join(t.model_dump_json(include={"id", "prompt", "answer", "verifier", "family"})
                              for t in sums(14)) + "\n")
    return f"jsonl:{path}"


class DiesOnce(EvalWorker):
    died = False

    def run_cell(self, *args: Any) -> Any:
        if not DiesOnce.died:
            DiesOnce.died = True
            raise SystemError("worker process killed")
        return super().run_cell(*args)


def test_the_harness_over_workers_gives_the_single_process_records(tmp_path: Path) -> None:
    cfg = cfg_of()
    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["none", "best-of-n", "core"], n_train=4, n_test=5,
                    budget=9, seeds=[0, 1])
    ctx = Context(cfg, policy=FakeLM(), embedder=HashingEmbedder(64), workdir=tmp_path / "one")
    try:
        one = run_eval(spec, ctx, keep_going=False)
    finally:
        ctx.close()
    pool = LocalPool(2, lambda name, _slot: DiesOnce(cfg, name, FakeLM(), HashingEmbedder(64)))
    saved: list[int] = []
    many = run_eval_on_workers(spec, cfg, pool, keep_going=False, runtime=Runtime(cfg, policy=FakeLM()),
                               on_record=lambda res: saved.append(len(res.records)))
    pool.close()
    timing = {"learn_seconds", "eval_seconds", "seconds"}
    assert [r.model_dump(exclude=timing) for r in many.records] == [
        r.model_dump(exclude=timing) for r in one.records]
    assert saved == [3, 6] and pool.generation[0] + pool.generation[1] == 3  # one worker was replaced


# -- options and imports -----------------------------------------------------------------------------

def test_worker_options_resolve_and_refuse_an_address_without_workers() -> None:
    assert requested_workers(RayConfig(), None, None) == 0
    assert requested_workers(RayConfig(workers=3), None, None) == 3
    assert requested_workers(RayConfig(workers=3), 0, None) == 0
    with pytest.raises(RayOptionError, match="--workers N"):
        requested_workers(RayConfig(), None, "10.0.0.1:6379")


def test_the_single_process_path_never_imports_ray() -> None:
    code = ("import sys, insightloop.apps.cli.main, insightloop.apps.distributed.run, "
            "insightloop.apps.distributed.evaluation; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_an_episode_order_round_trips() -> None:
    order = EpisodeOrder(key="a.jsonl:s1", task=sums(1)[0], train=True, budget=Budget(max_rollouts=3))
    assert EpisodeOrder.model_validate_json(order.model_dump_json()) == order
    assert Reward(score=1.0).correct
