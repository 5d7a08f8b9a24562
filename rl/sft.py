"""Supervised folding with TRL's `SFTTrainer`: correct texts, loss on the completion only.

Used as a fold method of its own and as an optional warm start on the verified chains before GRPO
or DPO (`FoldConfig.warm_start_sft`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from insightloop.core.config import FoldConfig
from insightloop.rl.data import SFTExample
from insightloop.rl.policy import common_args, lora_config, quiet


def sft_dataset(examples: Sequence[SFTExample]) -> Any:
    """A prompt-completion dataset; TRL appends the EOS token to each completion."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": e.prompt, "completion": e.completion} for e in examples])


def make_sft_trainer(model: Any, tokenizer: Any, examples: Sequence[SFTExample], cfg: FoldConfig,
                     steps: int, out_dir: str | Path, seed: int = 0, callbacks: Sequence[Any] = ()) -> Any:
    """An `SFTTrainer` over `examples` (the prompt tokens are masked out of the loss; `cfg.sft`)."""
    from trl import SFTConfig, SFTTrainer

    if not examples:
        raise ValueError("SFT needs at least one correct text; no verified chain or correct attempt yet")
    args = SFTConfig(**common_args(cfg, steps, out_dir, seed),
                     per_device_train_batch_size=max(1, min(cfg.batch_size, len(examples))),
                     completion_only_loss=True, max_length=cfg.sft.max_length)
    trainer = SFTTrainer(model=model, args=args, train_dataset=sft_dataset(examples),
                         processing_class=tokenizer, callbacks=list(callbacks), peft_config=lora_config(cfg))
    return quiet(trainer)
