"""Folding: datasets from episodes, TRL GRPO / SFT / DPO runs, checkpoints, weight hand-off."""
