"""Answer choice with and without contextual calibration, on the embedded model, side by side.

For each suite: the same 120 test problems (`split`, seed 0), one greedy attempt each with answers
chosen among the allowed options (`search.answer_mode=choose`), first as the model ranks them, then
with each option's likelihood divided by its likelihood after a content-free input (`search.calibrate`).
Prints accuracy, the answer distribution and the paired difference with its 95 % interval.

Run: `.venv/bin/python benchmarks/bench_calibration.py [--suites bbh/navigate,...] [--test 120]`.
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from insightloop.agent.backends import make_lm  # noqa: E402
from insightloop.agent.search.solve import solve_many  # noqa: E402
from insightloop.core.config import ModelConfig, SearchConfig  # noqa: E402
from insightloop.core.stats import mcnemar_p, paired_ci  # noqa: E402
from insightloop.evals.suites import load_suite, split  # noqa: E402

SUITES = "bbh/boolean_expressions,bbh/navigate,bbh/web_of_lies"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suites", default=SUITES)
    ap.add_argument("--test", type=int, default=120)
    ap.add_argument("--answer-tokens", type=int, default=160)
    args = ap.parse_args()
    lm = make_lm(ModelConfig(max_batch=32))
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    print("| suite | calibrate | accuracy % | answers | seconds |")
    print("|---|---|---|---|---|")
    diffs = {}
    for suite in args.suites.split(","):
        _, test = split(load_suite(suite, seed=0), 5, args.test, 0, cap_test=True)
        right = {}
        for calibrate in (False, True):
            cfg = SearchConfig(strategy="sample", rollouts=1, temperature=0.0, answer_tokens=args.answer_tokens,
                               answer_mode="choose", calibrate=calibrate)
            t = time.time()
            eps = solve_many(test, lm, cfg, max_active=32)
            right[calibrate] = [float(e.correct) for e in eps]
            counts = collections.Counter(e.answer for e in eps).most_common(3)
            acc = 100 * sum(right[calibrate]) / len(eps)
            print(f"| {suite} | {calibrate} | {acc:.1f} | {counts} | {time.time() - t:.0f} |", flush=True)
        diffs[suite] = (right[False], right[True])
    print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
    for suite, (base, new) in diffs.items():
        lo, hi = paired_ci(base, new, random.Random(0))
        lift = 100 * (sum(new) - sum(base)) / len(base)
        print(f"ratio: {suite} calibrated - uncalibrated = {lift:+.1f} points "
              f"[{100 * lo:+.1f}, {100 * hi:+.1f}] on {len(base)} problems, McNemar p {mcnemar_p(base, new):.3g}")


if __name__ == "__main__":
    main()
