"""Console latency on a large run directory: 10k insights and 5k episodes written through the real
store (SQLite + FAISS), then the time to open it and run the common commands, rendered to a string.

Run: .venv/bin/python benchmarks/bench_console.py [--insights 10000] [--episodes 5000] [--keep DIR]
The insights are synthetic texts embedded with the hashing embedder (the model is not what is
measured here); the episodes are small synthetic MCTS trees with credit on half of them.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from insightloop.apps.console.inspector import open_inspector
from insightloop.core.config import MemoryConfig
from insightloop.core.episode import Episode, SearchTree, Trajectory
from insightloop.core.task import Reward, Task
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.store import MemoryStore
from rich.console import Console

EMBEDDER = "hashing-384"
VERBS = ["check", "verify", "simplify", "restate", "count", "compare", "isolate", "estimate", "factor",
         "track"]
NOUNS = ["the parity", "each operand", "the units", "the last step", "the negation", "every clause",
         "the remainder", "the order of operations", "the final answer line", "the boundary case"]


def insight_text(i: int, rng: random.Random) -> str:
    return (f"When the problem involves {rng.choice(NOUNS)}, {rng.choice(VERBS)} {rng.choice(NOUNS)} "
            f"before {rng.choice(VERBS)}ing {rng.choice(NOUNS)} (rule {i}).")


def episode(i: int, rng: random.Random, used: list[tuple[str, str]]) -> Episode:
    task = Task(id=f"task-{i % 500}", family="synthetic", prompt=f"Problem {i}: what is {i} mod 7?",
                answer=str(i % 7), verifier="numeric")
    tree = SearchTree()
    for d in range(6):
        parent = 0 if d < 3 else d - 2
        tree.add(parent, f"Step {d}: reduce {i} by sevens.\n", visits=rng.randint(1, 4),
                 value_sum=rng.random(), reward=float(rng.random() < 0.5))
    correct = rng.random() < 0.4 + 0.2 * bool(used)
    best = Trajectory(node_ids=[1, 4], steps=[tree.nodes[1].step_text, tree.nodes[4].step_text],
                      text=tree.path_text(4), reward=float(correct))
    return Episode(id=f"ep-{i:05d}", task=task, tree=tree, trajectories=[best], best=best,
                   insights_used=[t for _, t in used], answer=str(i % 7 if correct else 0),
                   reward=Reward(score=float(correct)), rollouts=6, prompt_tokens=300, completion_tokens=90,
                   started=1.7e9 + i, finished=1.7e9 + i + 1, meta={"phase": "train",
                                                                    "insight_ids": [x for x, _ in used]})


def build(run: Path, n_insights: int, n_episodes: int, rng: random.Random) -> dict[str, float]:
    """Write the records through the store's public API; returns the seconds each part took."""
    cfg = MemoryConfig(embedder=EMBEDDER)
    times: dict[str, float] = {}
    with MemoryStore.open(run, HashingEmbedder(384), cfg) as store:
        start = time.perf_counter()
        ids: list[tuple[str, str]] = []
        for i in range(n_insights):
            ins, _ = store.add_insight(insight_text(i, rng), "strategy", "", "synthetic", None, None,
                                       "bench", {})
            ids.append((ins.id, ins.text))
        times["add insights"] = time.perf_counter() - start
        start = time.perf_counter()
        for i in range(n_episodes):
            used = rng.sample(ids, 2) if i % 2 else []
            ep = store.add_episode(episode(i, rng, used))
            if used:
                store.credit([x for x, _ in used], ep.task, float(ep.correct), 0.4, ep.id)
        times["add episodes + credit"] = time.perf_counter() - start
    (run / "bench-config.yaml").write_text(f"memory:\n  embedder: {EMBEDDER}\n")
    return times


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(run: Path) -> list[tuple[str, float]]:
    """Open the run as `insightloop inspect` does, then time each command including rendering."""
    sink = Console(file=io.StringIO(), width=160)
    out: list[tuple[str, float]] = []
    start = time.perf_counter()
    inspector, close = open_inspector(run, str(run / "bench-config.yaml"))
    out.append(("open the run directory", time.perf_counter() - start))
    some = inspector.store.list_insights(sort="uses", limit=1)[0].id
    newest = inspector.store.list_episodes(limit=1)[0].id
    commands = ["insights", "insights --sort uses", "insights --sort recent --limit 1000", f"insight {some}",
                "episodes", "episodes --failed", f"episode {newest}", "versions", "budget", "curve",
                "search check the parity"]
    try:
        for line in commands:
            out.append((line, timed(lambda line=line: sink.print(inspector.execute(line)))))
        out.append(("open + insights (fresh)", _open_and_list(run)))
    finally:
        close()
    return out


def _open_and_list(run: Path) -> float:
    sink = Console(file=io.StringIO(), width=160)
    start = time.perf_counter()
    inspector, close = open_inspector(run, str(run / "bench-config.yaml"))
    sink.print(inspector.execute("insights"))
    elapsed = time.perf_counter() - start
    close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--insights", type=int, default=10_000)
    ap.add_argument("--episodes", type=int, default=5_000)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the run directory here")
    args = ap.parse_args()
    run = args.keep or Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        if not (run / "bench-config.yaml").is_file():
            for part, secs in build(run, args.insights, args.episodes, random.Random(0)).items():
                print(f"build: {part:<28} {secs:8.2f} s")
        for line, secs in measure(run):
            print(f"{line:<44} {secs * 1000:9.1f} ms")
            if line in ("curve", "budget"):
                print(f"ratio: console {line} at {args.episodes} episodes / 200 ms target = {secs / 0.2:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(run, ignore_errors=True)


if __name__ == "__main__":
    main()
