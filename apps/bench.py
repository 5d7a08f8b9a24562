"""What the embedded model costs on this machine (`insightloop bench`, printed by `apps/cli/bench.py`).

Measured, each once after a warm-up and with small fixed sizes (about two minutes on 2 cores):
- generation tokens/s of the hf backend for one greedy sequence (EOS ignored, fixed length), and of
  the same model file in llama.cpp when `llama_cpp` is importable, with the ratio;
- rollouts/s of MCTS on a few BBH problems;
- the wall time of one learning episode (solve, credit, contrast, admission) with a fresh memory;
- the wall time of one GRPO fold step (TRL, one prompt, one group);
- memory queries/s: `MemoryStore.retrieve` over a store of insights embedded with the real MiniLM.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insightloop.agent.learn.loop import Learner
from insightloop.agent.search.domain import ATTEMPT_PRIMER
from insightloop.agent.search.solve import solve_many
from insightloop.apps.runtime import Runtime
from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.core.lm import LM, GenRequest
from insightloop.core.models import embedded_gguf_path, resolve_policy
from insightloop.core.task import Task
from insightloop.evals.suites import load_suite
from insightloop.evals.verifiers import verify
from insightloop.memory.store import MemoryStore
from insightloop.rl.data import GRPOPrompt, chat_render
from insightloop.rl.grpo import make_grpo_trainer
from insightloop.rl.policy import load_policy
from pydantic import BaseModel

PROMPT = "Explain step by step how to compute 17 * 23, then give the result."
GEN_TOKENS = 64
SUITE = "bbh/boolean_expressions"
BENCH_SEARCH = [
    "search.step_tokens=32",
    "search.answer_tokens=64",
    "search.max_depth=3",
    "search.rollouts=6",
    "loop.baseline_samples=1",
    "loop.pairs=2",
    "loop.max_candidates=1",
]


class BenchResult(BaseModel):
    """The figures `insightloop bench` prints."""

    hf_tokens_per_s: float
    llama_cpp_tokens_per_s: float | None = None
    llama_cpp: str = "not installed"
    llama_cpp_over_hf: float | None = None
    mcts_rollouts_per_s: float
    mcts_rollouts: int
    episode_seconds: float
    episode_rollouts: int
    fold_step_seconds: float
    memory_queries_per_s: float
    memory_insights: int
    cpus: int | None = None


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def hf_tokens_per_s(cfg: Config, tokens: int = GEN_TOKENS) -> float:
    """One greedy sequence of exactly `tokens` tokens through the hf backend."""
    from insightloop.agent.backends.hf import HFBackend  # imports torch

    backend = HFBackend(cfg.policy.model_copy(update={"backend": "hf"}), ignore_eos=True)
    req = GenRequest.chat(PROMPT, max_tokens=tokens, temperature=0.0)
    backend.generate([req.model_copy(update={"max_tokens": 4})])
    backend.prefixes.clear()
    secs, out = _timed(lambda: backend.generate([req]))
    return out[0][0].completion_tokens / secs


def llama_cpp_tokens_per_s(tokens: int = GEN_TOKENS, threads: int | None = None) -> float | None:
    """The same GGUF file in llama.cpp, one greedy sequence; None when llama_cpp is not installed."""
    try:
        from llama_cpp import Llama
    except ImportError:
        return None

    llm = Llama(model_path=str(embedded_gguf_path()), n_ctx=512, n_threads=threads, verbose=False)
    msgs = [{"role": "user", "content": PROMPT}]
    llm.create_chat_completion(messages=msgs, max_tokens=4, temperature=0.0)
    secs, out = _timed(lambda: llm.create_chat_completion(messages=msgs, max_tokens=tokens, temperature=0.0))
    return out["usage"]["completion_tokens"] / secs


def mcts_rollouts_per_s(lm: LM, cfg: Config, n_tasks: int = 3) -> tuple[float, int]:
    tasks = load_suite(SUITE, limit=n_tasks)
    scfg = cfg.search.model_copy(update={"strategy": "mcts"})
    secs, eps = _timed(lambda: solve_many(tasks, lm, scfg, max_active=len(tasks)))
    rollouts = sum(ep.rollouts for ep in eps)
    return rollouts / secs, rollouts


def episode_seconds(lm: LM, cfg: Config, embedder: Any) -> tuple[float, int]:
    """One training episode of the CORE loop on a failed-prone problem, fresh memory."""
    task = load_suite(SUITE, limit=4)[3]
    with (
        tempfile.TemporaryDirectory(prefix="insightloop-bench-") as tmp,
        MemoryStore.open(tmp, embedder, cfg.memory) as store,
    ):
        learner = Learner(lm, lm, store, cfg, random.Random(0), run_dir=tmp)
        budget = Budget(max_rollouts=cfg.search.rollouts + 4).start()
        secs, _ = _timed(lambda: learner.run_episode(task, True, budget))
        return secs, budget.rollouts


def fold_step_seconds(cfg: Config) -> float:
    """One GRPO optimizer step (one prompt, one group) of the embedded policy through TRL."""
    grpo = cfg.fold.grpo.model_copy(update={"group_size": 4, "mix_offpolicy": False})
    fc = cfg.fold.model_copy(update={"batch_size": 1, "max_completion_tokens": GEN_TOKENS, "grpo": grpo})
    model, tok = load_policy(resolve_policy(cfg.policy.model))
    task = load_suite(SUITE, limit=1)[0]
    prompt = GRPOPrompt(prompt=chat_render(tok)(task, []) + ATTEMPT_PRIMER, task=task, fail_rate=1.0)
    with tempfile.TemporaryDirectory(prefix="insightloop-bench-fold-") as work:
        trainer, _ = make_grpo_trainer(model, tok, [prompt], fc, 1, work, verify, 0)
        secs, _ = _timed(trainer.train)
    return secs


def memory_queries_per_s(cfg: Config, embedder: Any, n: int = 300, queries: int = 50) -> float:
    rng = random.Random(0)
    words = [
        "sum",
        "carry",
        "negate",
        "parentheses",
        "order",
        "left",
        "right",
        "count",
        "steps",
        "truth",
        "false",
        "check",
        "digit",
        "answer",
        "compare",
        "units",
        "list",
        "sort",
        "first",
        "last",
    ]
    texts = [
        f"When {' '.join(rng.choices(words, k=4))}, {' '.join(rng.choices(words, k=6))}." for _ in range(n)
    ]
    tasks = [
        Task(id=f"q{i}", family="bench", prompt=" ".join(rng.choices(words, k=12))) for i in range(queries)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="insightloop-bench-mem-") as tmp,
        MemoryStore.open(tmp, embedder, cfg.memory) as store,
    ):
        for text in texts:
            store.add_insight(text, status="active")
        store.retrieve(tasks[0])
        secs, _ = _timed(lambda: [store.retrieve(t) for t in tasks])
        return queries / secs


def run_bench(cfg: Config, log: Callable[[str], None] = lambda _m: None) -> BenchResult:
    """Every measurement, in order; `log` hears which one is running."""
    log("hf backend tokens/s")
    hf = hf_tokens_per_s(cfg)
    log("llama.cpp tokens/s")
    llama = llama_cpp_tokens_per_s(threads=cfg.policy.threads)
    runtime = Runtime(cfg)
    lm = runtime.policy
    log("MCTS rollouts/s")
    rps, rollouts = mcts_rollouts_per_s(lm, cfg)
    embedder = runtime.embedder
    log("one learning episode")
    ep_s, ep_r = episode_seconds(lm, cfg, embedder)
    log("one fold step")
    fold_s = fold_step_seconds(cfg)
    log("memory queries/s")
    qps = memory_queries_per_s(cfg, embedder)
    return BenchResult(
        hf_tokens_per_s=hf,
        llama_cpp_tokens_per_s=llama,
        llama_cpp="installed" if llama is not None else "not installed",
        llama_cpp_over_hf=None if llama is None else llama / hf,
        mcts_rollouts_per_s=rps,
        mcts_rollouts=rollouts,
        episode_seconds=ep_s,
        episode_rollouts=ep_r,
        fold_step_seconds=fold_s,
        memory_queries_per_s=qps,
        memory_insights=300,
        cpus=os.cpu_count(),
    )


def lines(r: BenchResult) -> list[tuple[str, str]]:
    llama = (
        "not installed (pip install llama-cpp-python)"
        if r.llama_cpp_tokens_per_s is None
        else f"{r.llama_cpp_tokens_per_s:.1f} tokens/s ({r.llama_cpp_over_hf:.2f}x the hf backend)"
    )
    return [
        ("hf backend, 1 sequence", f"{r.hf_tokens_per_s:.1f} tokens/s"),
        ("llama.cpp, same model", llama),
        ("MCTS", f"{r.mcts_rollouts_per_s:.2f} rollouts/s ({r.mcts_rollouts} rollouts)"),
        ("one learning episode", f"{r.episode_seconds:.1f} s ({r.episode_rollouts} rollouts)"),
        ("one fold step (GRPO, group of 4)", f"{r.fold_step_seconds:.1f} s"),
        ("memory retrieve", f"{r.memory_queries_per_s:.0f} queries/s over {r.memory_insights} insights"),
    ]


def save(res: BenchResult, path: str | Path) -> None:
    Path(path).write_text(res.model_dump_json(indent=1), encoding="utf-8")
