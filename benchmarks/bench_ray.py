"""Ray benchmark: daemon throughput on 1 vs 2 workers, the memory writer's capacity, and how many
workers one writer serves.

1. Throughput: the real daemon (console script) on the embedded SmolLM2 with a small episode (one
   sampled rollout of `--tokens` answer tokens) over `--tasks` inbox tasks: in one process, then on
   each of `--workers` Ray workers (local runtime). Tasks/hour in the steady state (first to last
   commit: Ray and model start left out) and over the whole run. The distributed runs' logs give each
   episode's writes and exchanges with the writer: a real worker's per-task load on it.
2. Writer capacity, in this process: a `MemoryService` over a fresh store applying one kind of write
   per exchange — credits, attempts, episodes per second — then credits in batches of 16 (one commit
   each) and whole tasks (retrieve, baseline, one batch of a task's writes). With the MiniLM embedder
   the writer embeds (task vectors for credit and attempts, the query for retrieval); with the hashing
   embedder the numbers are SQLite's alone.
3. Load test: the writer as a Ray actor on a local runtime (loopback) and T fake workers — threads of
   this process, each with its own Ray transport — sending that per-task pattern as fast as they can:
   tasks/s served and an exchange's p50/p95 latency, per T. Tasks/s served over one real worker's
   tasks/s is the number of workers one writer serves at that per-task write rate.

Usage: `python benchmarks/bench_ray.py [--tasks 8] [--workers 1,2] [--tokens 16] [--threads 1,4,16]
[--writes 150] [--embedder embedded] [--skip-daemon]`; the heavier run: `--tasks 40 --tokens 64
--threads 1,4,16,64 --writes 1000`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from insightloop.apps.distributed.protocol import (  # noqa: E402
    AttemptOp,
    BaselineRequest,
    CreditOp,
    EpisodeOp,
    RetireOp,
    RetrieveRequest,
    WriteBatch,
    WriteOp,
)
from insightloop.apps.distributed.writer import MemoryService  # noqa: E402
from insightloop.core.config import Config, load_config  # noqa: E402
from insightloop.core.episode import Episode, Trajectory  # noqa: E402
from insightloop.core.task import Reward, Task  # noqa: E402
from insightloop.memory.embed import make_embedder  # noqa: E402
from insightloop.memory.records import Attempt  # noqa: E402
from insightloop.memory.store import MemoryStore  # noqa: E402

CLI = str(Path(sys.executable).with_name("insightloop"))
SMALL = ["search.strategy=sample", "search.rollouts=1", "search.seed=1", "loop.baseline_samples=0",
         "loop.synthesize=false", "loop.max_candidates=1", "loop.pairs=1", "loop.analyst_tokens=24",
         "policy.threads=1", "daemon.inbox_settle_s=0", "daemon.poll_seconds=0.2", "ray.object_store_mb=100"]


# -- 1. throughput ---------------------------------------------------------------------------------

def daemon_run(root: Path, workers: int, tasks: int, tokens: int) -> dict[str, Any]:
    """One daemon run to the end of its inbox; tasks/hour and the per-task writer load from its log."""
    run = root / f"run-{workers}"
    (run / "inbox").mkdir(parents=True)
    lines = [json.dumps({"id": f"q{i}", "prompt": f"What is {i} + {i + 3}?", "answer": str(2 * i + 3),
                         "verifier": "numeric"}) for i in range(tasks)]
    (run / "inbox" / "tasks.jsonl").write_text("\n".join(lines) + "\n")
    cmd = [CLI, "daemon", "--run-dir", str(run), "--exit-when-idle", "--workers", str(workers)]
    for item in [*SMALL, f"search.answer_tokens={tokens}"]:
        cmd += ["--set", item]
    start = time.monotonic()
    subprocess.run(cmd, check=True, capture_output=True, timeout=3600)
    wall = time.monotonic() - start
    logs = [json.loads(line) for line in (run / "logs" / "daemon.jsonl").read_text().splitlines()]
    done = sorted(r["ts"] for r in logs if r["msg"] == "task_done")
    episodes = [r for r in logs if r["msg"] == "episode_done"]
    steady = (len(done) - 1) / (done[-1] - done[0]) * 3600 if len(done) > 1 and done[-1] > done[0] else 0.0
    return {"workers": workers, "tasks": len(done), "wall_s": wall, "steady_per_hour": steady,
            "overall_per_hour": len(done) / wall * 3600,
            "writes": statistics.fmean(e["writes"] for e in episodes) if episodes else None,
            "exchanges": statistics.fmean(e["exchanges"] for e in episodes) if episodes else None}


def throughput(workers: list[int], tasks: int, tokens: int) -> list[dict[str, Any]]:
    """Part 1: one process, then each worker count; prints the table."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
        for w in [0, *workers]:
            print(f"daemon: {w or 'one process, no'} Ray workers, {tasks} tasks ...", flush=True)
            rows.append(daemon_run(Path(tmp), w, tasks, tokens))
    print(f"\n{'workers':<22} {'tasks':>5} {'wall s':>7} {'tasks/h steady':>15} {'tasks/h overall':>16} "
          f"{'writes/task':>12} {'exchanges/task':>15}")
    for r in rows:
        label = "one process (no Ray)" if r["workers"] == 0 else f"{r['workers']} Ray worker(s)"
        extra = "-" if r["writes"] is None else f"{r['writes']:.1f}"
        ex = "-" if r["exchanges"] is None else f"{r['exchanges']:.1f}"
        print(f"{label:<22} {r['tasks']:>5} {r['wall_s']:>7.1f} {r['steady_per_hour']:>15.0f} "
              f"{r['overall_per_hour']:>16.0f} {extra:>12} {ex:>15}")
    return rows


# -- 2. the writer in process ----------------------------------------------------------------------

def task_of(i: int) -> Task:
    return Task(id=f"t{i}", family="arith", prompt=f"Problem {i}: what is {i} + {3 * i}? Think step by step.",
                answer=str(4 * i), verifier="numeric")


def episode_of(task: Task, rng: random.Random) -> Episode:
    """An episode record the size of a small real one (four 80-word attempts)."""
    text = " ".join(rng.choice(("add", "the", "tens", "carry", "then", "units")) for _ in range(80))
    trajs = [Trajectory(text=f"{text}\nAnswer: {task.answer}", reward=1.0) for _ in range(4)]
    return Episode(id=f"{task.id}-{rng.getrandbits(40):x}", task=task, trajectories=trajs, best=trajs[0],
                   answer=task.answer, reward=Reward(score=1.0), rollouts=4, prompt_tokens=400,
                   completion_tokens=320, insights_used=[])


def task_writes(task: Task, ids: list[str], rng: random.Random, attempts: int) -> list[WriteOp]:
    """What one training episode writes: credit, its correct attempts, a retirement pass, the episode."""
    ops: list[WriteOp] = [CreditOp(insight_ids=ids, task=task, reward=1.0, baseline=0.5, episode_id="e")]
    ops += [AttemptOp(attempt=Attempt(task_id=task.id, task_text=task.prompt, family=task.family,
                                      text=f"attempt {k} of {task.id}", reward=1.0)) for k in range(attempts)]
    return [*ops, RetireOp(), EpisodeOp(episode=episode_of(task, rng))]


def seeded_store(folder: Path, cfg: Config, embedder: str) -> tuple[MemoryService, list[str]]:
    """A writer over a fresh store holding 20 active insights (retrieval has candidates to score)."""
    store = MemoryStore.open(folder, make_embedder(embedder), cfg.memory)
    lessons = [f"When a problem mentions item {k}, count item {k} twice before answering." for k in range(20)]
    ids = [store.add_insight(text, "strategy", status="active")[0].id for text in lessons]
    return MemoryService(store), ids


def rate(n: int, fn: Callable[[int], object]) -> float:
    """Calls per second of `fn(0..n-1)`."""
    start = time.perf_counter()
    for i in range(n):
        fn(i)
    return n / (time.perf_counter() - start)


def writer_capacity(embedder: str, n: int, attempts: int) -> dict[str, float]:
    """Writes per second by kind, credits in batches, and whole tasks per second."""
    cfg, rng = load_config(None, []), random.Random(0)
    with tempfile.TemporaryDirectory(prefix="bench-writer-") as tmp:
        svc, ids = seeded_store(Path(tmp), cfg, embedder)
        seq = iter(range(1, 10**9))

        def send(ops: list[WriteOp], request: Any = None) -> None:
            svc.exchange(WriteBatch(source="bench", seq=next(seq), ops=ops), request)

        def credit(i: int) -> CreditOp:
            return CreditOp(insight_ids=ids[:3], task=task_of(i), reward=float(i % 2), baseline=0.5)

        out = {  # a new task's first credit embeds it (a training problem); later ones do not
            "credits/s new task": rate(n, lambda i: send([credit(i)])),
            "credits/s": rate(n, lambda i: send([credit(i)])),
            "credits/s 16 a batch": 16 * rate(max(1, n // 16),
                                              lambda i: send([credit(16 * i + k) for k in range(16)])),
            "attempts/s": rate(n, lambda i: send(task_writes(task_of(10**5 + i), [], rng, 1)[1:2])),
            "episodes/s": rate(n, lambda i: send([EpisodeOp(episode=episode_of(task_of(i), rng))])),
        }

        def one_task(i: int) -> None:  # a training episode's exchanges: retrieve, baseline, its writes
            task = task_of(2 * 10**5 + i)
            svc.exchange(None, RetrieveRequest(task=task, k=5, train=True, token_budget=400))
            svc.exchange(None, BaselineRequest(task_id=task.id))
            send(task_writes(task, ids[:3], rng, attempts))

        out["tasks/s"] = rate(n, one_task)
        svc.close()
    return out


# -- 3. the load test over Ray ---------------------------------------------------------------------

def fake_worker(transport: Any, index: int, tasks: int, ids: list[str], attempts: int,
                latencies: list[float]) -> None:
    """One fake worker: the per-task exchange pattern of a real one, as fast as the writer answers."""
    rng, seq = random.Random(index), 0
    for i in range(tasks):
        task = task_of(10**6 * (index + 1) + i)
        seq += 1
        for batch, request in ((None, RetrieveRequest(task=task, k=5, train=True, token_budget=400)),
                               (None, BaselineRequest(task_id=task.id)),
                               (WriteBatch(source=f"fake{index}", seq=seq,
                                           ops=task_writes(task, ids, rng, attempts)), None)):
            start = time.perf_counter()
            transport(batch, request)
            latencies.append(time.perf_counter() - start)


def load_test(threads: list[int], per_thread: int, embedder: str, attempts: int) -> list[dict[str, float]]:
    """Part 3: the writer actor under T fake workers, for each T."""
    from insightloop.apps.distributed.cluster import RaySession, RayTransport
    from insightloop.core.config import RayConfig

    cfg = load_config(None, [f"memory.embedder={embedder}"])
    rows = []
    session = RaySession(RayConfig(object_store_mb=100), 1)
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp, session as s:
        svc, ids = seeded_store(Path(tmp), cfg, embedder)  # seeded here, then handed to the writer actor
        svc.close()
        writer = s.spawn_writer(Path(tmp), cfg)
        fake_worker(RayTransport(writer, 600.0), 999, 2, ids[:3], attempts, [])  # loads the writer's embedder
        for t in threads:
            latencies: list[float] = []
            pool = [threading.Thread(target=fake_worker, args=(RayTransport(writer, 600.0), k, per_thread,
                                                               ids[:3], attempts, latencies)) for k in range(t)]
            start = time.perf_counter()
            for th in pool:
                th.start()
            for th in pool:
                th.join()
            wall = time.perf_counter() - start
            q = statistics.quantiles(latencies, n=20)
            rows.append({"threads": t, "tasks/s": t * per_thread / wall,
                         "p50_ms": statistics.median(latencies) * 1e3, "p95_ms": q[18] * 1e3})
        s.ray.get(writer.close.remote())
    return rows


# -- the report ------------------------------------------------------------------------------------

def main() -> None:
    """Parse the arguments, run the three parts, print the ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=8)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--threads", default="1,4,16")
    ap.add_argument("--writes", type=int, default=150, help="writes of each kind for the capacity table")
    ap.add_argument("--embedder", default="embedded", help="embedded (MiniLM) or hashing (SQLite alone)")
    ap.add_argument("--skip-daemon", action="store_true", help="only the writer (parts 2 and 3)")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at the start")
    workers = [int(w) for w in args.workers.split(",") if w.strip()]
    rows = [] if args.skip_daemon else throughput(workers, args.tasks, args.tokens)
    dist = [r for r in rows if r["workers"] and r["writes"] is not None]
    attempts = max(0, round(statistics.fmean(r["writes"] for r in dist)) - 3) if dist else 1
    caps = {e: writer_capacity(e, args.writes, attempts) for e in dict.fromkeys([args.embedder, "hashing"])}
    print(f"\nwriter in process ({args.writes} of each):")
    for embedder, cap in caps.items():
        print(f"  {embedder:<9} " + ", ".join(f"{k} {v:.0f}" for k, v in cap.items()))
    threads = [int(t) for t in args.threads.split(",")]
    loads = load_test(threads, max(4, args.writes // 10), args.embedder, attempts)
    print("\nload test: the writer actor and T fake workers (threads of one process, Ray over loopback)")
    print(f"{'T':>4} {'tasks/s':>8} {'exchange p50 ms':>16} {'p95 ms':>8}")
    for r in loads:
        print(f"{r['threads']:>4} {r['tasks/s']:>8.1f} {r['p50_ms']:>16.2f} {r['p95_ms']:>8.2f}")
    report(rows, caps[args.embedder], loads)
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


def report(rows: list[dict[str, Any]], cap: dict[str, float], loads: list[dict[str, float]]) -> None:
    """The headline ratios (run_all.py collects the `ratio:` lines)."""
    by = {r["workers"]: r for r in rows}
    served = max(r["tasks/s"] for r in loads)
    if 1 in by and 2 in by and by[1]["steady_per_hour"]:
        one_w, two_w = by[1]["steady_per_hour"], by[2]["steady_per_hour"]
        print(f"ratio: ray: tasks/hour 2 workers / 1 worker = {two_w / one_w:.2f} (steady state; "
              f"{one_w:.0f} vs {two_w:.0f})")
    if 1 in by and 0 in by and by[0]["steady_per_hour"]:
        print(f"ratio: ray: tasks/hour 1 Ray worker / one process = "
              f"{by[1]['steady_per_hour'] / by[0]['steady_per_hour']:.2f}")
    print(f"ratio: ray writer: credits/s in batches of 16 / one a batch = "
          f"{cap['credits/s 16 a batch'] / cap['credits/s']:.1f}x (one commit per batch)")
    one = by[1]["steady_per_hour"] / 3600 if 1 in by and by[1]["steady_per_hour"] else None
    if one:
        print(f"ratio: ray writer: workers one writer serves at this per-task rate = {served / one:.0f}"
              f" ({served:.1f} tasks/s served, one worker {one:.3f} tasks/s)")
    print(f"ratio: ray writer: workers served at 1 task/s each = {served:.0f}")


if __name__ == "__main__":
    main()
