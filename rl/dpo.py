"""Preference folding with TRL's `DPOTrainer`: conservative DPO plus an SFT term, TRL's own losses.

Pairs come from search-tree siblings (`rl.data.build_dpo_pairs`): the shared reasoning prefix sits
in the prompt, so only the divergent continuations are scored (prefix masking). The objective is
`L_DPO + α·L_SFT` through TRL's multi-loss option (`loss_type=[..., "sft"]`, `loss_weights`). For
conservative DPO this TRL version applies `label_smoothing` in its `robust` loss (preference labels
flipped with probability ε), so a non-zero ε selects `robust` and ε = 0 plain `sigmoid`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from insightloop.core.config import DPOFoldConfig, FoldConfig
from insightloop.rl.data import DPOPair
from insightloop.rl.policy import common_args, lora_config, quiet


def dpo_losses(cfg: DPOFoldConfig) -> tuple[list[str], list[float]]:
    """TRL loss types and weights for the configured label smoothing and SFT weight α (`fold.dpo`)."""
    pref = "robust" if cfg.label_smoothing > 0 else "sigmoid"
    if cfg.sft_weight <= 0:
        return [pref], [1.0]
    return [pref, "sft"], [1.0, cfg.sft_weight]


def dpo_dataset(pairs: Sequence[DPOPair]) -> Any:
    """A standard-format preference dataset; TRL appends EOS to both continuations."""
    from datasets import Dataset

    rows = [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs]
    return Dataset.from_list(rows)


def make_dpo_trainer(model: Any, tokenizer: Any, pairs: Sequence[DPOPair], cfg: FoldConfig, steps: int,
                     out_dir: str | Path, seed: int = 0, callbacks: Sequence[Any] = ()) -> Any:
    """A `DPOTrainer` over `pairs` (the reference is a frozen copy, or the base under LoRA)."""
    from trl import DPOConfig, DPOTrainer

    if not pairs:
        raise ValueError("DPO needs at least one pair: a search tree with both a correct and a wrong attempt")
    dpo = cfg.dpo
    loss_type, loss_weights = dpo_losses(dpo)
    args = DPOConfig(**common_args(cfg, steps, out_dir, seed),
                     per_device_train_batch_size=max(1, min(cfg.batch_size, len(pairs))),
                     beta=dpo.beta, label_smoothing=dpo.label_smoothing, loss_type=loss_type,
                     loss_weights=loss_weights, max_length=dpo.max_length)
    trainer = DPOTrainer(model=model, args=args, train_dataset=dpo_dataset(pairs), processing_class=tokenizer,
                         callbacks=list(callbacks), peft_config=lora_config(cfg))
    return quiet(trainer)
