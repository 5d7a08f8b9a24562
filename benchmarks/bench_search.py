"""Search speed on the embedded policy: MCTS against the backend's own batch rate, with and without
prefix reuse, and sampling, on the same tasks and seed.

Prints from one run:
- the hf backend's own rate at batch 32 (64 greedy tokens per row, EOS ignored): the ceiling;
- MCTS with prefix reuse on and off, and the `sample` strategy, at each rollout budget: rollouts/s,
  generated tokens/s, that rate as a fraction of the batch-32 rate, and accuracy (best verified
  attempt; value-weighted vote);
- the speedup of prefix reuse in rollouts/s.
Each configuration gets a freshly loaded backend (an empty prefix cache) and one untimed warm-up.

    python benchmarks/bench_search.py [--suite bbh/boolean_expressions] [--tasks 16] [--budgets 6 12]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from insightloop.agent.backends.hf import HFBackend  # noqa: E402
from insightloop.agent.search.solve import solve_many  # noqa: E402
from insightloop.agent.search.summary import summarize  # noqa: E402
from insightloop.core.config import Config, load_config  # noqa: E402
from insightloop.core.lm import GenRequest  # noqa: E402
from insightloop.core.task import Task  # noqa: E402
from insightloop.evals.suites import load_suite  # noqa: E402

PROMPT = "Explain step by step how to compute 17 * 23, then give the result."


def backend_rate(cfg: Config, batch: int = 32, tokens: int = 64) -> float:
    """The backend's own completion tokens/s for `batch` greedy rows of `tokens` tokens (EOS ignored)."""
    lm = HFBackend(cfg.policy.model_copy(update={"max_batch": batch}), ignore_eos=True)
    reqs = [GenRequest.chat(PROMPT, max_tokens=tokens, temperature=0.0)] * batch
    lm.generate(reqs[:1])
    best = 0.0
    for _ in range(2):
        lm.prefixes.clear()
        start = time.perf_counter()
        out = lm.generate(reqs)
        best = max(best, sum(g.completion_tokens for gens in out for g in gens) / (time.perf_counter() - start))
    return best


def run_one(cfg: Config, tasks: list[Task], strategy: str, budget: int, reuse: bool) -> dict[str, object]:
    """Solve `tasks` with one configuration on a fresh backend; return its figures."""
    policy = cfg.policy.model_copy(update={"prefix_reuse": reuse})
    search = cfg.search.model_copy(update={"strategy": strategy, "rollouts": budget})
    lm = HFBackend(policy)
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


def print_table(rows: list[dict[str, object]], ceiling: float) -> None:
    head = (f"{'strategy':<8} {'prefix reuse':>12} {'budget':>6} {'rollouts':>8} {'seconds':>8} "
            f"{'rollouts/s':>10} {'gen tok/s':>9} {'of batch-32':>11} {'accuracy':>9} {'vote acc':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        reuse = ("on" if r["reuse"] else "off") if r["strategy"] == "mcts" else "on"
        print(f"{r['strategy']:<8} {reuse:>12} {r['budget']:>6} {r['rollouts']:>8} {r['seconds']:>8.1f} "
              f"{r['rollouts_per_s']:>10.3f} {r['completion_tok_per_s']:>9.1f} "
              f"{r['completion_tok_per_s'] / ceiling:>11.2f} "  # type: ignore[operator]
              f"{r['correct']:>4}/{r['tasks']:<4} {r['vote_accuracy']:>8.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="bbh/boolean_expressions")
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--budgets", type=int, nargs="+", default=[6, 12])
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="config override, e.g. search.step_tokens=32")
    args = ap.parse_args()
    cfg = load_config(None, ["search.step_tokens=40", "search.answer_tokens=96", "search.max_depth=3",
                             *args.overrides])
    tasks = load_suite(args.suite, limit=args.tasks)
    print(f"suite {args.suite}, {len(tasks)} tasks, seed {cfg.search.seed}, width {cfg.search.width}, "
          f"step_tokens {cfg.search.step_tokens}, answer_tokens {cfg.search.answer_tokens}, "
          f"max_depth {cfg.search.max_depth}, {os.cpu_count()} CPU cores, load {os.getloadavg()[0]:.2f}")
    ceiling = backend_rate(cfg)
    print(f"hf backend's own rate at batch 32: {ceiling:.1f} generated tokens/s\n")
    rows = [run_one(cfg, tasks, "mcts", args.budgets[0], reuse=False)]
    for budget in args.budgets:
        rows.append(run_one(cfg, tasks, "mcts", budget, reuse=True))
        rows.append(run_one(cfg, tasks, "sample", budget, reuse=True))
    print_table(rows, ceiling)
    off, on = rows[0], rows[1]
    print(f"\nprefix reuse: {on['rollouts_per_s'] / off['rollouts_per_s']:.2f}x rollouts/s "  # type: ignore[operator]
          f"(MCTS, budget {args.budgets[0]}); load {os.getloadavg()[0]:.2f}")
    print(f"ratio: MCTS gen tokens/s / backend batch-32 rate = "
          f"{on['completion_tok_per_s'] / ceiling:.2f}")  # type: ignore[operator]
    print(f"ratio: MCTS prefix reuse on / off (rollouts/s) = "
          f"{on['rollouts_per_s'] / off['rollouts_per_s']:.2f}x")  # type: ignore[operator]


if __name__ == "__main__":
    main()
