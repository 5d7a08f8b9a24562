"""Mixed-policy GRPO with TRL: the verifier is the reward; verified chains rescue all-wrong groups.

A small policy often samples a whole group of wrong answers for a hard prompt. GRPO's advantage is
the reward minus the group mean, so such a group contributes nothing. Here, when a prompt's
on-policy group holds no correct completion and a verified chain (or stored correct attempt)
exists for its task, that text replaces the last member of the group as an off-policy sample
(LUFFY-style mixed-policy GRPO). The group then has reward variance, the chain gets a positive
advantage and the wrong samples a negative one, and TRL's own GRPO loss does the rest.

The hook is TRL's documented `rollout_func`. TRL hands it the prompts (already repeated once per
group member) and the trainer; it delegates the on-policy sampling to the trainer's own generation
routine, so the transformers, paged and vLLM paths behave exactly as in a default GRPO run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from insightloop.agent.search.domain import ATTEMPT_PRIMER
from insightloop.core.config import FoldConfig
from insightloop.core.task import Reward, Task
from insightloop.rl.data import GRPOPrompt
from insightloop.rl.policy import common_args, lora_config, quiet

VerifyFn = Callable[[Task, str], Reward]


def verifier_reward(verify: VerifyFn) -> Callable[..., list[float]]:
    """A TRL reward function scoring each completion with the task's verifier (task from its column)."""
    cache: dict[str, Task] = {}

    def correctness(prompts: list[str], completions: list[str], task_json: list[str],
                    **_: Any) -> list[float]:
        scores = []
        for comp, tj in zip(completions, task_json, strict=True):
            task = cache.get(tj) or cache.setdefault(tj, Task.model_validate_json(tj))
            scores.append(verify(task, ATTEMPT_PRIMER + comp).score)
        return scores

    return correctness


class MixedPolicyRollout:
    """A TRL `rollout_func`: on-policy groups, plus an off-policy chain in each all-wrong group."""

    def __init__(self, prompts: Sequence[GRPOPrompt], verify: VerifyFn, mix: bool = True):
        self.by_prompt = {p.prompt: p for p in prompts}
        self.verify = verify
        self.mix = mix
        self.groups = 0
        self.joined = 0

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, Any]:
        tok = trainer.processing_class
        prompt_ids = tok(text=prompts)["input_ids"]
        size = trainer.num_generations if trainer.model.training else trainer.num_generations_eval
        completion_ids, logprobs = trainer._generate_single_turn(prompt_ids, None, {}, size)
        texts = tok.batch_decode(completion_ids, skip_special_tokens=True)
        offpolicy = [False] * len(prompts)
        for start in range(0, len(prompts), size):
            self.groups += 1
            item = self.by_prompt.get(prompts[start])
            if not self.mix or item is None or item.offpolicy is None:
                continue
            group = range(start, start + size)
            if any(self.verify(item.task, ATTEMPT_PRIMER + texts[i]).correct for i in group):
                continue
            last = start + size - 1
            ids = tok(item.offpolicy, add_special_tokens=False)["input_ids"]
            completion_ids[last] = ids + [tok.eos_token_id]
            if logprobs is not None:
                # No sampling log-probs exist for an off-policy text; TRL reads None as "no correction".
                logprobs[last] = [None] * len(completion_ids[last])
            offpolicy[last] = True
            self.joined += 1
        return {"prompt_ids": prompt_ids, "completion_ids": completion_ids, "logprobs": logprobs,
                "offpolicy": offpolicy}


def grpo_dataset(prompts: Sequence[GRPOPrompt]) -> Any:
    """The TRL dataset: the prompt text plus the task as JSON, forwarded to the reward function."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": p.prompt, "task_json": p.task.model_dump_json()} for p in prompts])


def make_grpo_trainer(model: Any, tokenizer: Any, prompts: Sequence[GRPOPrompt], cfg: FoldConfig,
                      steps: int, out_dir: str | Path, verify: VerifyFn, seed: int = 0,
                      callbacks: Sequence[Any] = ()) -> tuple[Any, MixedPolicyRollout]:
    """A `GRPOTrainer` over `prompts` with the verifier reward and the mixed-policy rollout (`cfg.grpo`)."""
    from trl import GRPOConfig, GRPOTrainer

    if not prompts:
        raise ValueError("GRPO needs at least one prompt; solve some training problems first")
    per_step, grpo = max(1, min(cfg.batch_size, len(prompts))), cfg.grpo
    args = GRPOConfig(**common_args(cfg, steps, out_dir, seed), num_generations=grpo.group_size,
                      per_device_train_batch_size=grpo.group_size * per_step,
                      max_completion_length=cfg.max_completion_tokens, temperature=grpo.temperature,
                      beta=grpo.kl_beta, use_vllm=grpo.use_vllm, log_completions=False)
    rollout = MixedPolicyRollout(prompts, verify, mix=grpo.mix_offpolicy)
    trainer = GRPOTrainer(model=model, reward_funcs=[verifier_reward(verify)], args=args,
                          train_dataset=grpo_dataset(prompts), processing_class=tokenizer,
                          callbacks=list(callbacks), peft_config=lora_config(cfg), rollout_func=rollout)
    return quiet(trainer), rollout
