"""The memory's known errors: a change asked of a reader, and a memory file that cannot be opened.

`MemoryFileError`, `MemoryVersionError` and `MemoryAccessError` are `UserError`s: the file is
damaged, was written by another insightloop version, or lies where it cannot be read or written
(a read-only directory or mount), and the message says which file it is and what to do about it.
"""

from __future__ import annotations

from pathlib import Path

from insightloop.core.errors import UserError


class ReadOnlyError(RuntimeError):
    """A change was asked of a store opened with readonly=True."""


class MemoryFileError(UserError):
    """The memory file is not a SQLite database, or its header is damaged."""

    def __init__(self, path: Path, detail: str) -> None:
        super().__init__(
            f"{path} is not a readable memory database ({detail}); restore the run's memory from an "
            f"export (`insightloop insights import FILE --run-dir DIR`) or move the file aside to "
            "start an empty memory"
        )
        self.path = path


class MemoryVersionError(UserError):
    """The memory file's schema version is one this code cannot use as it is."""

    def __init__(self, path: Path, found: int, known: int, readonly: bool) -> None:
        if found > known:
            advice = (
                f"it was written by a newer insightloop (schema {found}; this one knows up to {known}): "
                "upgrade insightloop, or export the memory with the newer version "
                "(`insightloop insights export`) and import it here"
            )
        else:
            advice = (
                f"its schema version {found} is older than this insightloop's {known} and a read-only "
                "opener cannot upgrade it: open the run once for writing (any command that changes its "
                "memory upgrades it in place), then read it again"
            )
        super().__init__(f"{path}: {advice}")
        self.path, self.found, self.known, self.readonly = path, found, known, readonly


class MemoryAccessError(UserError):
    """The memory file cannot be opened or changed where it lies (a read-only directory or mount)."""

    def __init__(self, path: Path, detail: str, readonly: bool) -> None:
        doing = "read" if readonly else "written"
        super().__init__(
            f"{path} cannot be {doing} there ({detail}): SQLite writes the file and its -wal and -shm files "
            "beside it, so a read-only mount or files that are not yours stop it; make the run directory "
            "writable, or copy it to a writable place and pass that as --run-dir"
        )
        self.path, self.readonly = path, readonly
