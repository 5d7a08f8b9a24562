"""Can the policy learn a family from its labels? SFT (LoRA) on answer-only completions of reference
answers, then one greedy attempt on 100 held-out problems, paired against the base weights.

    python benchmarks/probe_reference_sft.py bbh/object_counting 25 32,96
    python benchmarks/probe_reference_sft.py bbh/object_counting 5,10,25,50 96
    python benchmarks/probe_reference_sft.py rg/word_sequence_reversal 200 96
    python benchmarks/probe_reference_sft.py \
        'rgc/leg_counting:{"min_animals": 1, "max_animals": 2, "max_instances": 3}' 200 96

The first 100 of a seeded shuffle are the test problems, the next N the training ones (several N, comma
separated: nested training sets, each trained from the base weights); `rgc/<name>:<json>`
generates a reasoning-gym dataset with those settings, graded as numbers. Trailing key=value arguments
are config overrides. Prints the base accuracy and, per step count, the accuracy, the lift with its 95 %
paired bootstrap interval, the final training loss and the seconds.
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from insightloop.core.config import load_config  # noqa: E402
from insightloop.core.models import resolve_policy  # noqa: E402
from insightloop.core.stats import paired_ci  # noqa: E402
from insightloop.core.task import Task  # noqa: E402
from insightloop.evals.suites import load_suite  # noqa: E402
from insightloop.evals.verifiers import verify  # noqa: E402
from insightloop.rl.fold import FoldData  # noqa: E402
from insightloop.rl.fold import train as fold_train  # noqa: E402
from insightloop.rl.gate import gate_search, scores  # noqa: E402
from insightloop.rl.policy import load_policy, resolved  # noqa: E402
from insightloop.rl.sources import reference_examples  # noqa: E402


def tasks_of(family: str, n: int) -> list[Task]:
    if not family.startswith("rgc/"):
        return load_suite(family, limit=n if family.startswith("rg/") else None, seed=0)
    from bench_online import configured_rg  # this directory's stream generator

    name, conf = family.removeprefix("rgc/").split(":", 1)
    return configured_rg(f"rg/{name}", n, 0, json.loads(conf), "numeric")


def main() -> None:
    from insightloop.agent.backends import make_lm

    family, sizes = sys.argv[1], [int(n) for n in sys.argv[2].split(",")]
    steps = [int(s) for s in sys.argv[3].split(",")]
    cfg = load_config(None, sys.argv[4:])
    tasks = tasks_of(family, max(sizes) + 100)
    random.Random(0).shuffle(tasks)
    test, pool = tasks[:100], tasks[100 : 100 + max(sizes)]
    print(f"{family}: {'/'.join(map(str, sizes))} training, {len(test)} test problems; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    lm, base_path, search = make_lm(cfg.policy), str(resolve_policy(cfg.policy.model)), gate_search(cfg)
    t0 = time.time()
    base = scores(lm, test, search)
    print(f"base {100 * sum(base) / len(base):.1f} % ({time.time() - t0:.0f} s)", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        for n, k in [(n, k) for n in sizes for k in steps]:
            data = FoldData(examples=reference_examples(pool[:n]), validation=test)
            fc = resolved(cfg.fold.model_copy(update={"method": "sft", "steps": k}))
            model, tok = load_policy(base_path)
            t0 = time.time()
            model, _, metrics = fold_train(model, tok, data, fc, verify, cfg.seed)
            where = Path(scratch) / f"sft-{n}-{k}"
            model.save_pretrained(where, safe_serialization=True)
            tok.save_pretrained(where)
            train_s = time.time() - t0
            lm.load_weights(str(where))
            t0 = time.time()
            new = scores(lm, test, search)
            lo, hi = paired_ci(base, new, random.Random(0))
            lift = 100 * (sum(new) - sum(base)) / len(base)
            print(f"{n} training, sft {k} steps: {100 * sum(new) / len(new):.1f} %, lift {lift:+.1f} "
                  f"[{100 * lo:+.1f}, {100 * hi:+.1f}], loss {metrics.get('train_loss', float('nan')):.3f}, "
                  f"train {train_s:.0f} s, "
                  f"eval {time.time() - t0:.0f} s, load {os.getloadavg()[0]:.2f}", flush=True)
            del model


if __name__ == "__main__":
    main()
