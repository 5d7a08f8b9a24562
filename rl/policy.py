"""The trainable policy shared by the three trainers: loading, LoRA, common TRL arguments, saving.

A fold always saves a plain model folder (a LoRA adapter is merged first), so every checkpoint loads
the same way in any backend and the next fold can start from it.

`resolved` decides the settings a config may leave to the machine: LoRA when training runs on a CPU
(full fine-tuning of even a 135M model costs several times the backward pass and the optimizer state
of the adapters), and the learning rate that suits the choice. The trainers read the config as given
(an unset `lora` trains in full there); `rl.fold` resolves it first.
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


LORA_LR = 1e-4  # adapters start at zero and are low rank: they need a larger step than full weights
FULL_LR = 5e-6


def cuda_available() -> bool:
    """Whether training would run on a CUDA device (TRL's trainers use one when present)."""
    import torch

    return bool(torch.cuda.is_available())


def resolved(cfg: FoldConfig, on_gpu: bool | None = None) -> FoldConfig:
    """`cfg` with `lora` (unset: LoRA unless training runs on a GPU) and `lr` (unset: the default of
    that choice) decided."""
    lora = cfg.lora if cfg.lora is not None else not (cuda_available() if on_gpu is None else on_gpu)
    lr = cfg.lr if cfg.lr is not None else (LORA_LR if lora else FULL_LR)
    return cfg.model_copy(update={"lora": lora, "lr": lr})


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

    lr = cfg.lr if cfg.lr is not None else (LORA_LR if cfg.lora else FULL_LR)
    gpu = torch.cuda.is_available()
    # TRL checkpoints activations by default to save GPU memory; on a CPU memory is plentiful and
    # compute is what is short, so the activations are kept rather than recomputed in the backward.
    return dict(output_dir=str(out_dir), max_steps=steps, learning_rate=lr, seed=seed,
                lr_scheduler_type="constant", warmup_steps=0, logging_steps=1, save_strategy="no",
                report_to=[], disable_tqdm=True, dataloader_num_workers=0, bf16=gpu,
                dataloader_pin_memory=gpu, remove_unused_columns=False) | {_checkpointing_arg(): gpu}


def _checkpointing_arg() -> str:
    """The TrainingArguments name of activation checkpointing: transformers 5 renamed it and warns on
    the old name (TRL's configs default the old one to True, so it is always set explicitly)."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    return "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"


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
