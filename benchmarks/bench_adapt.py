"""Few-shot adaptation benchmark: baseline vs adapted accuracy on several suites and seeds.

With the embedded SmolLM2-135M as policy and analyst: 5 training problems and one fixed rollout
budget per run, each (suite, seed) pair measured on its own held-out test split. Prints one row per
run, then the per-suite mean lift, and writes all results as JSON lines.

    .venv/bin/python benchmarks/bench_adapt.py [--suites a,b] [--seeds 0,1,2] [--test 30] [--budget 40]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

for _k, _v in (("HF_HUB_OFFLINE", "1"), ("TRANSFORMERS_OFFLINE", "1"),
               ("LITELLM_LOCAL_MODEL_COST_MAP", "True"), ("TOKENIZERS_PARALLELISM", "false")):
    os.environ.setdefault(_k, _v)

from insightloop.apps.adapt import AdaptResult, adapt  # noqa: E402
from insightloop.apps.runtime import Runtime  # noqa: E402
from insightloop.core.config import load_config  # noqa: E402

SUITES = ["bbh/boolean_expressions", "bbh/navigate", "bbh/web_of_lies", "rg/basic_arithmetic"]
# Sized for a shared 2-core CPU: whole-attempt sampling, short answers, one thread per process
# (torch's spin-waiting threads collapse when several processes share the cores). Synthesis
# feeds the fold, not the insight lift measured here, so it is off.
OVERRIDES = ["search.strategy=sample", "search.rollouts=4", "search.answer_tokens=96", "loop.pairs=3",
             "loop.max_candidates=3", "loop.baseline_samples=1", "loop.analyst_tokens=96",
             "loop.synthesize=false", "policy.threads=1"]


def _row(r: AdaptResult) -> str:
    lo, hi = r.lift_ci
    return (f"{r.suite:28s} {r.seed:4d} {100 * r.baseline_accuracy:6.1f} {100 * r.adapted_accuracy:6.1f} "
            f"{100 * r.lift:+6.1f} [{100 * lo:+6.1f},{100 * hi:+6.1f}] {r.rollouts:4d} "
            f"{r.prompt_tokens_per_problem:6.0f} {r.insights_admitted:3d}/{r.insights_rejected:<3d} "
            f"{r.seconds:6.0f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default=",".join(SUITES))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--train", type=int, default=5)
    ap.add_argument("--test", type=int, default=16)
    ap.add_argument("--budget", type=int, default=24)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", default="benchmarks/results/adapt.jsonl")
    args = ap.parse_args(argv)
    cfg = load_config(overrides=OVERRIDES + args.overrides)
    runtime = Runtime(cfg)  # the models load once and serve every run
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"adapt benchmark: train={args.train} test={args.test} budget={args.budget} overrides={OVERRIDES}")
    print(f"{'suite':28s} {'seed':>4s} {'base':>6s} {'adapt':>6s} {'lift':>6s} {'95% CI':>15s} {'roll':>4s} "
          f"{'tok/pb':>6s} adm/rej {'sec':>6s}", flush=True)
    results: list[AdaptResult] = []
    # Seed-major order: every suite has a first measurement before any suite gets its third.
    for seed in (int(s) for s in args.seeds.split(",")):
        for suite in args.suites.split(","):
            t0 = time.time()
            r = adapt(suite, args.train, args.test, args.budget, cfg, seed=seed, runtime=runtime)
            results.append(r)
            with out.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**r.model_dump(mode="json"), "wall": time.time() - t0}) + "\n")
            print(_row(r), flush=True)
    print("\nper suite (mean over seeds):")
    for suite in dict.fromkeys(r.suite for r in results):
        rs = [r for r in results if r.suite == suite]
        mean = statistics.mean
        print(f"  {suite:28s} baseline {100 * mean(r.baseline_accuracy for r in rs):5.1f}%  adapted "
              f"{100 * mean(r.adapted_accuracy for r in rs):5.1f}%  "
              f"lift {100 * mean(r.lift for r in rs):+5.1f} pts  "
              f"admitted {sum(r.insights_admitted for r in rs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
