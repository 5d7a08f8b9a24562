"""The trainable policy shared by the three trainers: loading, LoRA, common TRL arguments, saving.

A fold always saves a plain model folder (a LoRA adapter is merged first), so every checkpoint loads
the same way in any backend and the next fold can start from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from insightloop.core.config import FoldConfig


def load_policy(path: str | Path) -> tuple[Any, Any]:
    """Model (fp32 on CPU, bf16 on a GPU) and tokenizer (left padding, pad token set) from a folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    tok = AutoTokenizer.from_pretrained(str(path))
    tok.padding_side = "left"
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return model, tok


def lora_config(cfg: FoldConfig) -> Any | None:
    """A peft LoRA config on every linear projection, or None for full fine-tuning."""
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, bias="none",
                      target_modules="all-linear", task_type="CAUSAL_LM")


def common_args(cfg: FoldConfig, steps: int, out_dir: str | Path, seed: int) -> dict[str, Any]:
    """TrainingArguments shared by GRPO, SFT and DPO: a fixed number of steps, no saving, no hub."""
    import torch

    return dict(output_dir=str(out_dir), max_steps=steps, learning_rate=cfg.lr, seed=seed,
                lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no",
                report_to=[], disable_tqdm=True, dataloader_num_workers=0,
                bf16=torch.cuda.is_available(), dataloader_pin_memory=torch.cuda.is_available(),
                remove_unused_columns=False)


def trained_model(trainer: Any) -> Any:
    """The trainer's model as a plain transformers model (LoRA merged into the weights)."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    return model


def quiet(trainer: Any) -> Any:
    """Drop the console printers transformers adds by default: progress goes out as typed events."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    return trainer
