"""Seconds per fold step of the embedded policy on this machine: GRPO, SFT and DPO, LoRA by default.

One short TRL run per method on `bbh/boolean_expressions` problems with made-up verified and wrong
attempts (the timing depends on the token counts, not on where the texts came from), at the fold's
default batch (4 prompts, examples or pairs a step; GRPO samples 4 completions of up to 128 tokens
per prompt). It prints one JSON line per method with the wall time of the optimizer steps (the first
step included: it is what a fold pays) and the machine's load average.

    python benchmarks/bench_fold_step.py [--steps 2] [--methods grpo sft dpo] [--full]
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
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

from insightloop.core.config import Config  # noqa: E402
from insightloop.core.episode import Episode, Trajectory  # noqa: E402
from insightloop.core.task import Reward, Task  # noqa: E402
from insightloop.evals.suites import load_suite  # noqa: E402
from insightloop.evals.verifiers import verify  # noqa: E402


def attempt(task: Task, answer: str) -> str:
    """An attempt of typical length for this suite: a few steps of working, then the answer line."""
    expr = task.prompt.split(" is")[0]
    return (f"Step 1: Evaluate the innermost parentheses of {expr} first.\n\n"
            f"Step 2: Apply not, then and, then or, from left to right.\n\nAnswer: {answer}")


def episodes(tasks: list[Task]) -> list[Episode]:
    """One episode per task: a correct and a wrong attempt (a DPO pair), failed half of the time."""
    out = []
    for i, t in enumerate(tasks):
        wrong = "True" if t.answer == "False" else "False"
        trajs = [Trajectory(text=attempt(t, wrong), reward=0.0)]
        if i % 2:
            trajs.append(Trajectory(text=attempt(t, t.answer or ""), reward=1.0))
        out.append(Episode(id=f"e{i}", task=t, trajectories=trajs, started=float(i),
                           reward=Reward(score=float(i % 2))))
    return out


def time_method(method: str, steps: int, full: bool) -> dict[str, object]:
    from insightloop.core.models import embedded_policy_path
    from insightloop.rl.data import build_dpo_pairs, build_grpo_prompts, build_sft_examples, chat_render
    from insightloop.rl.dpo import make_dpo_trainer
    from insightloop.rl.grpo import make_grpo_trainer
    from insightloop.rl.policy import load_policy, resolved
    from insightloop.rl.sft import make_sft_trainer

    fc = resolved(Config().fold.model_copy(update={"lora": False} if full else {}))
    model, tok = load_policy(embedded_policy_path())
    eps, render = episodes(load_suite("bbh/boolean_expressions", limit=16)), chat_render(tok)
    with tempfile.TemporaryDirectory(prefix="bench-fold-step-") as work:
        if method == "grpo":
            prompts = build_grpo_prompts(eps, [], render, 16, random.Random(0))
            trainer, _ = make_grpo_trainer(model, tok, prompts, fc, steps, work, verify)
        elif method == "sft":
            trainer = make_sft_trainer(model, tok, build_sft_examples(eps, [], render), fc, steps, work)
        else:
            trainer = make_dpo_trainer(model, tok, build_dpo_pairs(eps, render), fc, steps, work)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return {"method": method, "lora": fc.lora, "lr": fc.lr, "steps": steps, "batch": fc.batch_size,
            "seconds_per_step": round(seconds / steps, 2), "load_average": os.getloadavg(),
            "threads": __import__("torch").get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--methods", nargs="+", default=["grpo", "sft", "dpo"], choices=["grpo", "sft", "dpo"])
    ap.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    args = ap.parse_args()
    for method in args.methods:
        row = time_method(method, args.steps, args.full)
        print(json.dumps(row), flush=True)
        print(f"ratio: {method} seconds per fold step ({'LoRA' if row['lora'] else 'full'}, batch {row['batch']}) "
              f"= {row['seconds_per_step']}", flush=True)


if __name__ == "__main__":
    main()
