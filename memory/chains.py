"""The chain buffer: verified reasoning chains written by the learning loop, read by the fold.

Kept as JSON lines in `RUN_DIR/chains.jsonl`, appended with an fsync; a torn last line (a crash
mid-append) is skipped on reading.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from insightloop.core.episode import Chain
from pydantic import ValidationError

CHAINS_FILE = "chains.jsonl"


def append_chains(run_dir: str | Path, chains: Iterable[Chain]) -> int:
    """Append chains to the run's chain buffer; returns how many were written."""
    path = Path(run_dir) / CHAINS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [c.model_dump_json() + "\n" for c in chains]
    with path.open("a", encoding="utf-8") as f:
        f.writelines(lines)
        f.flush()
        os.fsync(f.fileno())
    return len(lines)


def load_chains(run_dir: str | Path) -> list[Chain]:
    """Read the chain buffer. A torn last line (a crash mid-append) is skipped, not fatal."""
    path = Path(run_dir) / CHAINS_FILE
    if not path.exists():
        return []
    out: list[Chain] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            out.append(Chain.model_validate_json(line))
        except ValidationError:
            continue
    return out
