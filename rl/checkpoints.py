"""Versioned checkpoints: RUN_DIR/checkpoints/<n>/ holds the model, tokenizer and a manifest.

Every write goes to a temporary name in the same folder and is then `os.replace`d (`core.files`),
so a crash leaves either the old state or the new one, never half a checkpoint. `CURRENT` holds the
number of the checkpoint the policy serves from; without it the policy is the base model. A rejected
fold keeps its manifest (what was tried and why it was refused) but not its weights.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from insightloop.core.files import atomic_dir, atomic_write
from pydantic import BaseModel, Field

CURRENT = "CURRENT"
MANIFEST = "manifest.json"


class Manifest(BaseModel):
    """What a checkpoint is: where it came from, what trained it, on what, and the gate's verdict."""

    index: int
    base_model: str
    parent: str | None = None
    method: str
    steps: int
    lora: bool = False
    data_counts: dict[str, int] = Field(default_factory=dict)
    config: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    gate: dict[str, Any] | None = None
    status: str = "pending"
    created: float = Field(default_factory=time.time)
    settled: float | None = Field(None, description="when the gate's verdict was written")
    seconds: float | None = Field(None, description="the fold's wall time: training, saving and the gate")


def checkpoints_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def current(run_dir: str | Path) -> Path | None:
    """The checkpoint folder the policy serves from, or None for the base model."""
    marker = checkpoints_dir(run_dir) / CURRENT
    if not marker.exists():
        return None
    folder = checkpoints_dir(run_dir) / marker.read_text(encoding="utf-8").strip()
    return folder if (folder / MANIFEST).is_file() else None


def set_current(run_dir: str | Path, folder: Path) -> None:
    """Point CURRENT at `folder` (atomically)."""
    checkpoints_dir(run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write(checkpoints_dir(run_dir) / CURRENT, folder.name + "\n")


def next_index(run_dir: str | Path) -> int:
    root = checkpoints_dir(run_dir)
    used = [int(p.name) for p in root.iterdir() if p.is_dir() and p.name.isdigit()] if root.exists() else []
    return max(used, default=0) + 1


def write_checkpoint(run_dir: str | Path, model: Any, tokenizer: Any, manifest: Manifest) -> Path:
    """Save model + tokenizer + manifest as checkpoints/<manifest.index>/ in one atomic rename."""
    dest = checkpoints_dir(run_dir) / str(manifest.index)
    if dest.exists():  # checked first too, so no time goes into saving weights that cannot land
        raise FileExistsError(f"{dest} exists; checkpoints are never overwritten")
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2), encoding="utf-8")
    return dest


def read_manifest(folder: str | Path) -> Manifest:
    return Manifest.model_validate(json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8")))


def update_manifest(folder: str | Path, **fields: Any) -> Manifest:
    """Rewrite the manifest with some fields changed (atomically)."""
    manifest = read_manifest(folder).model_copy(update=fields)
    atomic_write(Path(folder) / MANIFEST, manifest.model_dump_json(indent=2))
    return manifest


def discard_weights(folder: str | Path) -> None:
    """Remove everything but the manifest (a rejected fold's weights are not worth the disk)."""
    for p in Path(folder).iterdir():
        if p.name != MANIFEST:
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def list_checkpoints(run_dir: str | Path) -> list[Manifest]:
    """Every checkpoint's manifest, oldest first."""
    return [read_manifest(p) for p in manifest_folders(run_dir)]


def manifest_folders(run_dir: str | Path) -> list[Path]:
    """The checkpoint folders that hold a manifest, oldest first."""
    root = checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if p.name.isdigit() and (p / MANIFEST).is_file()),
                  key=lambda p: int(p.name))
