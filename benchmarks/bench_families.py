"""Which task families can the policy learn from its own attempts? Greedy accuracy, verified samples
and the answer-parse rate per family, side by side in one run.

Self-training (a fold on verified attempts, a worked example in memory) needs attempts the verifier
accepts. For each family this prints, on the same `--tasks` problems (seed 0):

- greedy: the fraction answered correctly by one greedy attempt, as the fold gate measures;
- sampled: the fraction of `--samples` attempts per problem at T=0.8 that verify, and pass@samples;
- parsed: the fraction of sampled attempts with any parsable answer (a low value means the model
  fails at the answer format, a high one with few verified attempts means it fails at the task);
- prior: for a family with a small label set, the accuracy of always giving its most frequent
  reference answer (what a model that learned nothing but the label prior would score).

    python benchmarks/bench_families.py [--families rg/chain_sum,bbh/navigate] [--tasks 40] [--samples 4]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from insightloop.agent.search.solve import solve_many  # noqa: E402
from insightloop.core.config import load_config  # noqa: E402
from insightloop.evals.suites import load_suite  # noqa: E402
from insightloop.rl.gate import gate_search  # noqa: E402

FAMILIES = ("bbh/boolean_expressions,bbh/navigate,bbh/object_counting,rg/syllogism,rg/letter_counting,"
            "rg/basic_arithmetic,rg/chain_sum,rg/leg_counting,rg/products,rg/word_sequence_reversal")


def load() -> str:
    return f"{os.getloadavg()[0]:.2f}"


def label_prior(tasks: list) -> float | None:
    """Accuracy of always giving the most frequent reference answer, for at most 8 distinct answers."""
    labels = Counter((t.answer or "").strip().lower() for t in tasks)
    if not labels or len(labels) > 8:
        return None
    return labels.most_common(1)[0][1] / len(tasks)


def measure(name: str, n: int, samples: int, lm, cfg) -> dict:  # noqa: ANN001
    tasks = load_suite(name, limit=n if name.startswith("rg/") else None, seed=0)[:n]
    t0 = time.perf_counter()
    greedy = solve_many(tasks, lm, gate_search(cfg))
    sampling = cfg.search.model_copy(update={"strategy": "sample", "rollouts": samples, "temperature": 0.8})
    episodes = solve_many(tasks, lm, sampling)
    attempts = [tr for ep in episodes for tr in ep.trajectories]
    return {"family": name, "tasks": len(tasks), "greedy": sum(ep.correct for ep in greedy) / len(tasks),
            "sampled": sum(tr.correct for tr in attempts) / max(1, len(attempts)),
            "pass_at_k": sum(ep.correct for ep in episodes) / len(tasks),
            "parsed": sum(bool((tr.parsed_answer or "").strip()) for tr in attempts) / max(1, len(attempts)),
            "prior": label_prior(tasks), "seconds": time.perf_counter() - t0, "load": load()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=FAMILIES)
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = ap.parse_args()
    from insightloop.agent.backends import make_lm

    cfg = load_config(None, args.set)
    lm = make_lm(cfg.policy)
    print(f"{cfg.policy.model} on {os.cpu_count()} CPUs; {args.tasks} tasks per family (seed 0), "
          f"{args.samples} samples at T=0.8; load {load()}", flush=True)
    print(f"{'family':28} {'greedy':>7} {'sampled':>8} {'pass@' + str(args.samples):>7} {'parsed':>7} "
          f"{'prior':>6} {'s':>5} {'load':>5}", flush=True)
    rows = []
    for name in args.families.split(","):
        r = measure(name, args.tasks, args.samples, lm, cfg)
        rows.append(r)
        prior = "–" if r["prior"] is None else f"{r['prior']:.2f}"
        print(f"{name:28} {r['greedy']:7.2f} {r['sampled']:8.3f} {r['pass_at_k']:7.2f} {r['parsed']:7.2f} "
              f"{prior:>6} {r['seconds']:5.0f} {r['load']:>5}", flush=True)
    learnable = [r["family"] for r in rows
                 if r["sampled"] > 0 and (r["prior"] is None or r["greedy"] > r["prior"])]
    print(f"ratio: families with verified samples and greedy accuracy above the label prior = "
          f"{len(learnable)}/{len(rows)} ({', '.join(learnable) or 'none'})")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
