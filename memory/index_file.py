"""`index.faiss` on disk: written atomically with a stamp, read back only when stamp and bytes agree.

`write` saves a faiss index through `core.files.atomic_path` (a temporary file beside it, fsynced,
then `os.replace`d in), then its stamp (`<file>.json`: the caller's fields — memory version,
embedder — plus dimension, entry count, byte size and CRC32). `read` returns (None, reason) when the
file is missing, stale (another version, embedder or dimension) or corrupt (size, CRC, unreadable,
not an id-mapped index), and the caller rebuilds from SQLite.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Any

from insightloop.core.files import atomic_path, atomic_write
from insightloop.memory.faisslib import faiss


def _crc32(path: Path) -> int:
    crc = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            crc = zlib.crc32(chunk, crc)
    return crc


def stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def write(raw: Any, path: Path, stamp: dict[str, Any]) -> None:
    """Write the index and its stamp atomically (index first: a crash in between leaves a stamp
    whose size/CRC no longer match, which `read` treats as corrupt)."""
    with atomic_path(path) as tmp:
        faiss().write_index(raw, str(tmp))
    meta = {**stamp, "count": int(raw.ntotal), "bytes": path.stat().st_size, "crc32": _crc32(path)}
    atomic_write(stamp_path(path), json.dumps(meta))


def read(path: Path, dim: int, stamp: dict[str, Any]) -> tuple[Any | None, str]:
    """The saved `IndexIDMap2` if its stamp matches `stamp` and the file is intact, else (None, reason)."""
    if not path.exists():
        return None, "missing"
    try:
        meta = json.loads(stamp_path(path).read_text())
    except (OSError, ValueError):
        return None, "corrupt"
    if meta.get("dim") != dim or any(meta.get(k) != v for k, v in stamp.items()):
        return None, "stale"
    if path.stat().st_size != meta.get("bytes") or _crc32(path) != meta.get("crc32"):
        return None, "corrupt"
    lib = faiss()
    try:
        raw = lib.read_index(str(path))
    except RuntimeError:
        return None, "corrupt"
    if not isinstance(raw, lib.IndexIDMap2) or raw.d != dim or raw.ntotal != meta.get("count"):
        return None, "corrupt"
    return raw, "loaded"
