"""Throughput of the hf backend on the embedded model, against this machine's matmul rate.

Prints, from one run:
1. the machine's fp32 matmul rate (GFLOP/s of a 2048 x 2048 `torch.mm`, best of several);
2. completion tokens/s at batch 1, 8, 32 and 64 (fixed prompt, 64 new tokens, EOS ignored, greedy),
   the model GFLOP/s that is (2 x parameters per token) and its fraction of the matmul rate;
3. llama.cpp on the same GGUF file at batch 1, and the ratio, when llama-cpp-python is installed
   (`pip install llama-cpp-python`: it compiles from source, minutes; never part of the setup);
4. prefix reuse off vs on for n=3 samples of a ~300-token prompt (cold: the prompt prefilled once;
   warm: the prompt extends one seen in an earlier call, the search's case);
5. with `--solve N`: a user's greedy evaluation, timed end to end as the CLI runs it (process start,
   model load and all): `insightloop solve --suite bbh/boolean_expressions --limit N --strategy sample
   --budget 1 --set search.temperature=0 --json`, its seconds, and its prompt + completion tokens as
   model GFLOP/s against the matmul rate.

Run: `.venv/bin/python benchmarks/bench_hf.py [--threads N] [--max-tokens 64] [--solve 100]`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see agent/backends/hf.py

import torch  # noqa: E402
from insightloop.agent.backends.hf import HFBackend  # noqa: E402
from insightloop.core.config import ModelConfig  # noqa: E402
from insightloop.core.lm import GenRequest  # noqa: E402

PROMPT = "Explain step by step how to compute 17 * 23, then give the result."
LONG_CONTEXT = (
    "You are solving a logic puzzle. Five friends sit in a row; each owns a different pet and "
    "drinks a different beverage. The person with the cat sits left of the tea drinker. "
) * 6
BATCHES = (1, 8, 32, 64)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Best-of-`repeats` fp32 GFLOP/s of an n x n matrix product with torch's current threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(4):
            a @ b
        best = min(best, (time.perf_counter() - start) / 4)
    return 2 * n**3 / best / 1e9


def tokens_per_s(backend: HFBackend, batch: int, max_tokens: int, repeats: int = 2) -> float:
    """Best completion tokens/s over `repeats` runs of `batch` identical greedy requests."""
    reqs = [GenRequest.chat(PROMPT, max_tokens=max_tokens, temperature=0.0)] * batch
    best = 0.0
    for _ in range(repeats):
        backend.prefixes.clear()
        start = time.perf_counter()
        out = backend.generate(reqs)
        tokens = sum(g.completion_tokens for gens in out for g in gens)
        best = max(best, tokens / (time.perf_counter() - start))
    return best


def llama_cpp_tokens_per_s(max_tokens: int, threads: int) -> float | None:
    try:
        from llama_cpp import Llama
    except ImportError:
        return None
    from insightloop.core.models import embedded_gguf_path

    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=512, n_threads=threads, verbose=False)
    llm(PROMPT, max_tokens=4)
    start = time.perf_counter()
    out = llm(PROMPT, max_tokens=max_tokens, temperature=0.0, ignore_eos=True)  # type: ignore[call-arg]
    return int(out["usage"]["completion_tokens"]) / (time.perf_counter() - start)


def batch_table(backend: HFBackend, max_tokens: int, threads: int) -> dict[int, float]:
    params = sum(p.numel() for p in backend.model.parameters())
    peak = matmul_gflops()
    print(f"\nmachine: {threads} threads, fp32 2048x2048 matmul {peak:.1f} GFLOP/s; model {params / 1e6:.1f}M "
          f"parameters = {2 * params / 1e9:.3f} GFLOP per token")
    print(f"hf backend, {max_tokens} tokens per sequence, EOS ignored, greedy")
    print(f"{'batch':>6} {'tokens/s':>9} {'GFLOP/s':>8} {'of matmul':>10}")
    rates = {}
    for batch in BATCHES:
        rate = tokens_per_s(backend, batch, max_tokens)
        rates[batch] = rate
        gflops = rate * 2 * params / 1e9
        print(f"{batch:>6} {rate:>9.1f} {gflops:>8.1f} {gflops / peak:>10.2f}")
        print(f"ratio: hf batch {batch} model GFLOP/s / matmul GFLOP/s = {gflops / peak:.2f}")
    llama = llama_cpp_tokens_per_s(max_tokens, threads)
    if llama is None:
        print("llama.cpp: llama-cpp-python is not installed (optional); no ratio")
    else:
        print(f"llama.cpp batch 1: {llama:.1f} tokens/s; hf / llama.cpp = {rates[1] / llama:.2f} at batch 1, "
              f"{rates[32] / llama:.2f} at batch 32")
    return rates


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
    print(f"ratio: prefix reuse (warm) speedup = {base / min(times['on (warm)']):.2f}x")


def solve_table(n: int, params: int, peak: float) -> None:
    """The CLI's greedy solve of `n` problems, end to end, against the matmul rate."""
    cli = str(Path(sys.executable).with_name("insightloop"))
    cmd = [cli, "solve", "--suite", "bbh/boolean_expressions", "--limit", str(n), "--strategy", "sample",
           "--budget", "1", "--set", "search.temperature=0", "--json"]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    wall = time.perf_counter() - start
    res = json.loads(out.stdout)
    gflops = res["tokens"] * 2 * params / 1e9 / wall
    print(f"\ngreedy solve of {n} bbh/boolean_expressions problems through the CLI (load {load:.2f}): "
          f"{wall:.1f} s wall, {res['seconds']:.1f} s solving, {res['tokens']} tokens (prompt + completion), "
          f"accuracy {res['accuracy']:.3f}")
    print(f"ratio: greedy solve model GFLOP/s / matmul GFLOP/s = {gflops / peak:.2f} (end to end; "
          f"{res['tokens'] * 2 * params / 1e9 / res['seconds'] / peak:.2f} of the solving time)")
    print(f"ratio: greedy solve seconds per 100 problems = {100 * wall / n:.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--reuse-tokens", type=int, default=16)
    parser.add_argument("--solve", type=int, default=0, help="also time the CLI's greedy solve of N problems")
    args = parser.parse_args()
    backend = HFBackend(ModelConfig(threads=args.threads, max_batch=max(BATCHES)), ignore_eos=True)
    backend.generate([GenRequest.chat(PROMPT, max_tokens=4, temperature=0.0)])  # warm-up
    batch_table(backend, args.max_tokens, torch.get_num_threads())
    reuse_table(backend, args.reuse_tokens)
    if args.solve:
        params = sum(p.numel() for p in backend.model.parameters())
        del backend  # the CLI loads its own copy
        solve_table(args.solve, params, matmul_gflops())
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
