"""Crash-safe file writes: write a temporary file beside the target, fsync, then `os.replace` it in.

`atomic_write` writes bytes or text; `atomic_path` hands a temporary path to a library that writes
files itself (faiss, matplotlib, safetensors) and moves the result into place only if it succeeds;
`atomic_dir` does the same for a whole folder (a model's `save_pretrained`, a checkpoint).

A reader (or a restart after `kill -9`) sees either the old file or the new one, never half of one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: str | Path, data: str | bytes, mode: int | None = None) -> Path:
    """Replace `path` with `data` atomically (text is written as UTF-8); `mode` sets permissions."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it and `os.replace` it in.

    On an error the temporary file is removed and `path` keeps its old content.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + dest.suffix, dir=dest.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | Path, exist_ok: bool = False) -> Iterator[Path]:
    """Yield a new empty folder beside `path`; when the block succeeds, `os.replace` it to `path`.

    A folder is never merged into or overwritten: if `path` exists when the block ends, another
    writer got there first, and with `exist_ok` its folder is kept (and ours dropped), otherwise
    FileExistsError is raised. On any error the temporary folder is removed.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            if not exist_ok:
                raise FileExistsError(f"{dest} exists; a folder written whole is never overwritten")
            shutil.rmtree(tmp)
            return
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
