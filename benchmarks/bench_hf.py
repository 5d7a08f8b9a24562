"""Throughput of the hf backend on the embedded model.

Prints two tables:
1. completion tokens/s for batch sizes 1, 4, 8, 16 (fixed prompt, fixed decode length: EOS ignored);
2. prefix reuse off vs on for n=3 samples of a ~300-token prompt: `on (cold)` prefills the prompt
   once and expands its cache to the 3 samples; `on (warm)` is the search's case, where the prompt
   extends one seen in an earlier call (a child step after its parent's path) and only the new
   tokens are prefilled.

Run: `.venv/bin/python benchmarks/bench_hf.py [--threads N] [--max-tokens 64]` (about 2 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see agent/backends/hf.py

from insightloop.agent.backends.hf import HFBackend  # noqa: E402
from insightloop.core.config import ModelConfig  # noqa: E402
from insightloop.core.lm import GenRequest  # noqa: E402

PROMPT = "Explain step by step how to compute 17 * 23, then give the result."
LONG_CONTEXT = (
    "You are solving a logic puzzle. Five friends sit in a row; each owns a different pet and "
    "drinks a different beverage. The person with the cat sits left of the tea drinker. "
) * 6


def _timed(backend: HFBackend, reqs: list[GenRequest], repeats: int) -> tuple[float, int]:
    """Best seconds over `repeats` runs (least disturbed by other load) and one run's tokens."""
    times, tokens = [], 0
    for _ in range(repeats):
        backend.prefixes.clear()
        start = time.perf_counter()
        out = backend.generate(reqs)
        times.append(time.perf_counter() - start)
        tokens = sum(g.completion_tokens for gens in out for g in gens)
    return min(times), tokens


def batch_table(backend: HFBackend, max_tokens: int) -> None:
    print(f"\nhf backend throughput, {max_tokens} tokens per sequence, EOS ignored, greedy")
    print(f"{'batch':>6} {'seconds':>9} {'tokens':>7} {'tokens/s':>9}")
    for batch in (1, 4, 8, 16):
        reqs = [GenRequest.chat(PROMPT, max_tokens=max_tokens, temperature=0.0)] * batch
        secs, toks = _timed(backend, reqs, repeats=2 if batch < 8 else 1)
        print(f"{batch:>6} {secs:>9.2f} {toks:>7} {toks / secs:>9.1f}")


def _reuse_once(backend: HFBackend, req: GenRequest, reuse: bool, warm: GenRequest | None) -> float:
    backend.cfg.prefix_reuse = reuse
    backend.prefixes.clear()
    if warm is not None:
        backend.generate([warm.model_copy(update={"n": 1, "max_tokens": 1})])
    start = time.perf_counter()
    backend.generate([req])
    return time.perf_counter() - start


def reuse_table(backend: HFBackend, max_tokens: int, repeats: int = 4) -> None:
    parent = GenRequest.chat(LONG_CONTEXT + "Who owns the fish?", assistant_prefix="Step 1: the cat",
                             n=3, max_tokens=max_tokens, temperature=0.8, seed=1)
    child = parent.model_copy(update={"assistant_prefix": parent.assistant_prefix + " sits in seat two."})
    prompt_len = len(backend.encode(child))
    modes = {"off": (False, None), "on (cold)": (True, None), "on (warm)": (True, parent)}
    times: dict[str, list[float]] = {label: [] for label in modes}
    for _ in range(repeats):  # interleaved, so a change in machine load hits every mode alike
        for label, (reuse, warm) in modes.items():
            times[label].append(_reuse_once(backend, child, reuse, warm))
    backend.cfg.prefix_reuse = True
    print(f"\nprefix reuse: n=3 samples, {prompt_len}-token prompt, {max_tokens} new tokens each "
          f"(best of {repeats})")
    base = min(times["off"])
    print(f"{'reuse':>10} {'seconds':>9} {'speedup':>8}")
    for label, secs in times.items():
        print(f"{label:>10} {min(secs):>9.3f} {base / min(secs):>7.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reuse-tokens", type=int, default=16)
    args = parser.parse_args()
    backend = HFBackend(ModelConfig(threads=args.threads, max_batch=16), ignore_eos=True)
    backend.generate([GenRequest.chat(PROMPT, max_tokens=4, temperature=0.0)])  # warm-up
    batch_table(backend, args.max_tokens)
    reuse_table(backend, args.reuse_tokens)


if __name__ == "__main__":
    main()
