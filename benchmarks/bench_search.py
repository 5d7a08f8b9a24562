"""Search speed and accuracy on the embedded policy: MCTS with and without prefix reuse, vs sampling.

On the same tasks and seed it runs
- MCTS with the hf backend's key/value prefix reuse on, then off (same requests, same seeds), and
- the `sample` strategy (N independent attempts in one request),
at each rollout budget, and prints rollouts per second, tokens per second and accuracy (best verified
attempt, and value-weighted vote) in one table. Each configuration gets a freshly loaded backend (an
empty prefix cache) and one untimed warm-up call.

    python benchmarks/bench_search.py [--suite bbh/boolean_expressions] [--tasks 6] [--budgets 6 12]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from insightloop.agent.search.solve import solve_many  # noqa: E402
from insightloop.agent.search.summary import summarize  # noqa: E402
from insightloop.core.config import Config, load_config  # noqa: E402
from insightloop.core.lm import GenRequest  # noqa: E402
from insightloop.core.task import Task  # noqa: E402
from insightloop.evals.suites import load_suite  # noqa: E402


def run_one(cfg: Config, tasks: list[Task], strategy: str, budget: int, reuse: bool) -> dict[str, object]:
    """Solve `tasks` with one configuration on a fresh backend; return its figures."""
    from insightloop.agent.backends import make_lm

    policy = cfg.policy.model_copy(update={"prefix_reuse": reuse})
    search = cfg.search.model_copy(update={"strategy": strategy, "rollouts": budget})
    lm = make_lm(policy)
    lm.generate([GenRequest.chat("Say hi.", max_tokens=4, temperature=0.0)])  # warm-up, untimed
    start = time.perf_counter()
    episodes = solve_many(tasks, lm, search, max_active=len(tasks))
    wall = time.perf_counter() - start
    s = summarize(episodes, strategy, seconds=wall)
    completion = sum(e.completion_tokens for e in episodes)
    return {"strategy": strategy, "reuse": reuse, "budget": budget, "rollouts": s.rollouts, "seconds": wall,
            "rollouts_per_s": s.rollouts / wall, "completion_tok_per_s": completion / wall,
            "accuracy": s.accuracy or 0.0, "vote_accuracy": s.vote_accuracy or 0.0, "correct": s.correct,
            "tasks": s.tasks}


def print_table(rows: list[dict[str, object]]) -> None:
    head = (f"{'strategy':<8} {'prefix reuse':>12} {'budget':>6} {'rollouts':>8} {'seconds':>8} "
            f"{'rollouts/s':>10} {'gen tok/s':>9} {'accuracy':>9} {'vote acc':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        reuse = ("on" if r["reuse"] else "off") if r["strategy"] == "mcts" else "on"
        print(f"{r['strategy']:<8} {reuse:>12} {r['budget']:>6} {r['rollouts']:>8} {r['seconds']:>8.1f} "
              f"{r['rollouts_per_s']:>10.3f} {r['completion_tok_per_s']:>9.1f} "
              f"{r['correct']:>4}/{r['tasks']:<4} {r['vote_accuracy']:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="bbh/boolean_expressions")
    ap.add_argument("--tasks", type=int, default=6)
    ap.add_argument("--budgets", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. search.step_tokens=32")
    args = ap.parse_args()
    cfg = load_config(None, ["search.step_tokens=40", "search.answer_tokens=96", "search.max_depth=3",
                             *args.overrides])
    tasks = load_suite(args.suite, limit=args.tasks)
    print(f"suite {args.suite}, {len(tasks)} tasks, seed {cfg.search.seed}, width {cfg.search.width}, "
          f"step_tokens {cfg.search.step_tokens}, answer_tokens {cfg.search.answer_tokens}, "
          f"max_depth {cfg.search.max_depth}, {os.cpu_count()} CPU cores")
    rows = [run_one(cfg, tasks, "mcts", args.budgets[0], reuse=False)]
    for budget in args.budgets:
        rows.append(run_one(cfg, tasks, "mcts", budget, reuse=True))
        rows.append(run_one(cfg, tasks, "sample", budget, reuse=True))
    print_table(rows)


if __name__ == "__main__":
    main()
