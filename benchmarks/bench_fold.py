"""Accuracy before and after one fold of the embedded policy on one suite, and the time of a fold step.

It splits the suite by seed into training and held-out tasks, solves the training tasks with the
`sample` strategy (real episodes, saved into a fresh run directory), folds them into the weights
(`rl.fold.fold`, default GRPO with mixed-policy groups), and reports the gate's paired before/after
accuracy on the held-out tasks (one greedy solver attempt each), the verdict, the data and step
counts, and the wall time of each phase.

    python benchmarks/bench_fold.py [--suite bbh/boolean_expressions] [--train 12] [--test 24]
                                    [--method grpo] [--steps 4] [--lr 1e-5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from insightloop.core.config import Config  # noqa: E402
from insightloop.evals.suites import load_suite  # noqa: E402
from insightloop.rl.fold import FoldData, fold  # noqa: E402


def bench_config(args: argparse.Namespace) -> Config:
    cfg = Config()
    cfg.search = cfg.search.model_copy(update=dict(strategy="sample", rollouts=args.samples,
                                                   answer_tokens=args.tokens, temperature=0.8))
    grpo = cfg.fold.grpo.model_copy(update=dict(group_size=args.group, max_prompts=args.train))
    cfg.fold = cfg.fold.model_copy(update=dict(method=args.method, steps=args.steps, lr=args.lr, grpo=grpo,
                                               batch_size=args.batch, max_completion_tokens=args.tokens,
                                               gate_max_tokens=args.tokens))
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="bbh/boolean_expressions")
    ap.add_argument("--train", type=int, default=12)
    ap.add_argument("--test", type=int, default=24)
    ap.add_argument("--method", default="grpo", choices=["grpo", "sft", "dpo"])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-5)
    ap.add_argument("--group", type=int, default=4)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--samples", type=int, default=4, help="attempts per training task")
    ap.add_argument("--tokens", type=int, default=96, help="completion token cap")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from insightloop.agent.backends import make_lm
    from insightloop.agent.search.solve import solve_many

    tasks = load_suite(args.suite)
    random.Random(args.seed).shuffle(tasks)
    train, test = tasks[: args.train], tasks[args.train: args.train + args.test]
    cfg = bench_config(args)
    lm = make_lm(cfg.policy)
    t0 = time.perf_counter()
    episodes = solve_many(train, lm, cfg.search, max_active=len(train))
    t_solve = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="bench-fold-") as run_dir:
        t1 = time.perf_counter()
        result = fold(run_dir, cfg, lm=lm, data=FoldData(episodes=episodes, validation=test))
        t_fold = time.perf_counter() - t1
    correct = sum(ep.correct for ep in episodes)
    report = {
        "suite": args.suite, "method": args.method, "steps": args.steps, "lr": args.lr,
        "train_tasks": len(train), "train_attempts": sum(len(ep.trajectories) for ep in episodes),
        "train_tasks_solved": correct, "data_counts": result.data_counts, "test_tasks": len(test),
        "accuracy_before": result.gate.old_accuracy, "accuracy_after": result.gate.new_accuracy,
        "accepted": result.accepted, "offpolicy_joined": result.metrics.get("offpolicy_joined"),
        "train_runtime_s": result.metrics.get("train_runtime"),
        "seconds_per_step": (result.metrics.get("train_runtime") or 0.0) / args.steps,
        "gate_seconds": result.gate.seconds, "solve_seconds": t_solve, "fold_seconds": t_fold,
        "total_minutes": (time.perf_counter() - t0) / 60, "cpu_threads": os.cpu_count(),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
