"""The daemon's inbox: task files moving `inbox/ → processing/ → done/ | failed/`, and its state DB.

A file is claimed by an atomic `os.replace` into `processing/` (under a name never used before in
this run dir, so results never mix). It is parsed with the foundation's JSONL loader; bad lines go
to `failed/<stem>.rejected.jsonl` with a sidecar `<that>.error.json` giving line numbers and
reasons, good lines proceed; a file with no good line goes to `failed/` whole, with its sidecar.

Per-task progress lives in `RUN_DIR/daemon.sqlite` (WAL): a task is done exactly when its row says
so. The outbox line is appended after that commit, and `rebuild_outbox` rewrites the outbox from
the rows (atomically) whenever a file is resumed or finished, so the outbox ends with exactly one
line per task even if the process died between the commit and the append.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from insightloop.core.files import atomic_write
from insightloop.core.task import VERIFIERS, Task
from pydantic import BaseModel, Field

SUBDIRS = ("inbox", "processing", "done", "failed", "outbox")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp")


class LineProblem(BaseModel):
    """Why one input line (1-based; None = the whole file) was refused."""

    line: int | None = None
    reason: str


class ParsedFile(BaseModel):
    """An inbox file after parsing: its good tasks in file order, its bad lines, or a fatal reason."""

    name: str
    tasks: list[Task] = Field(default_factory=list)
    problems: list[LineProblem] = Field(default_factory=list)
    fatal: str | None = None


def _problem(p: Any) -> LineProblem:
    """A problem reported by the JSONL loader (`evals.suites.jsonl.LineProblem`) in our terms."""
    return LineProblem(line=p.line, reason=p.message)


def _line_of(path: Path, task_id: str) -> int | None:
    """The 1-based line holding `task_id` (the loader does not keep line numbers on tasks)."""
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            obj = json.loads(raw)
        except ValueError:
            continue
        if isinstance(obj, dict) and obj.get("id") == task_id:
            return number
    return None


def parse_inbox_file(path: Path, max_prompt_chars: int, max_file_bytes: int) -> ParsedFile:
    """Parse one claimed file. Never raises on bad input: reasons end up in `problems` / `fatal`."""
    from insightloop.evals.suites.jsonl import read_task_lines

    if not path.name.endswith(".jsonl"):
        return ParsedFile(name=path.name, fatal="not a .jsonl file: the inbox takes JSON-lines task files "
                                                "named *.jsonl (one task object per line)")
    size = path.stat().st_size
    if size > max_file_bytes:
        return ParsedFile(name=path.name, fatal=f"file is {size} bytes; the limit is {max_file_bytes} "
                                                "(daemon.max_file_bytes): split it into smaller files")
    tasks, raw_problems = read_task_lines(path, skip_bad=True)
    problems = [_problem(p) for p in raw_problems]
    good: list[Task] = []
    for task in tasks:
        if len(task.prompt) > max_prompt_chars:
            problems.append(LineProblem(line=_line_of(path, task.id), reason=(
                f"task {task.id!r}: the prompt has {len(task.prompt)} characters; the limit is "
                f"{max_prompt_chars} (daemon.max_prompt_chars)")))
        elif task.verifier not in VERIFIERS:
            problems.append(LineProblem(line=_line_of(path, task.id), reason=(
                f"task {task.id!r}: unknown verifier {task.verifier!r}; use one of {', '.join(VERIFIERS)}")))
        else:
            good.append(task)
    problems.sort(key=lambda p: p.line or 0)
    fatal = None
    if not good:
        fatal = "no valid task in the file" if problems else "the file holds no task (it is empty)"
    return ParsedFile(name=path.name, tasks=good, problems=problems, fatal=fatal)


def _raw_lines(path: Path, numbers: Iterable[int]) -> bytes:
    """The raw bytes of the given 1-based lines (kept as bytes: the line may not be valid UTF-8)."""
    wanted = set(numbers)
    lines = path.read_bytes().split(b"\n")
    return b"".join(lines[n - 1].rstrip(b"\r") + b"\n" for n in sorted(wanted) if 0 < n <= len(lines))


class Inbox:
    """The run dir's inbox folders and the moves between them."""

    def __init__(self, run_dir: Path, clock: Callable[[], float], settle_s: float = 0.0) -> None:
        self.root = Path(run_dir)
        self.clock = clock
        self.settle_s = settle_s
        for sub in SUBDIRS:
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def dir(self, sub: str) -> Path:
        return self.root / sub

    def waiting(self) -> list[Path]:
        """Inbox files ready to claim, oldest first (hidden and temp-named files are left alone)."""
        out = []
        for p in self.dir("inbox").iterdir():
            if p.name.startswith(".") or p.name.endswith(IGNORED_SUFFIXES) or not p.is_file():
                continue
            st = p.stat()
            if self.settle_s and self.clock() - st.st_mtime < self.settle_s:
                continue  # probably still being written
            out.append((st.st_mtime, p.name, p))
        return [p for _, _, p in sorted(out)]

    def processing(self) -> list[Path]:
        folder = self.dir("processing")
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))

    def _taken(self, name: str, known: set[str]) -> bool:
        return name in known or any((self.dir(d) / name).exists() for d in ("processing", "done", "failed"))

    def claim(self, path: Path, known: set[str]) -> Path:
        """Move an inbox file into processing/ under a fresh name (`a.jsonl`, else `a.2.jsonl`, ...)."""
        stem, suffix = (path.name[:-6], ".jsonl") if path.name.endswith(".jsonl") else (path.name, "")
        name, n = path.name, 1
        while self._taken(name, known):
            n += 1
            name = f"{stem}.{n}{suffix}"
        dest = self.dir("processing") / name
        os.replace(path, dest)
        return dest

    def fail_file(self, path: Path, reason: str, problems: list[LineProblem], source: str) -> Path:
        """Move a whole file to failed/ with its `<name>.error.json` sidecar (sidecar first)."""
        dest = self.dir("failed") / path.name
        self._sidecar(dest, reason, problems, source)
        os.replace(path, dest)
        return dest

    def reject_lines(self, path: Path, problems: list[LineProblem], source: str) -> Path:
        """Copy a file's bad lines to failed/<stem>.rejected.jsonl, with a sidecar saying why."""
        stem = path.name[:-6] if path.name.endswith(".jsonl") else path.name
        dest = self.dir("failed") / f"{stem}.rejected.jsonl"
        atomic_write(dest, _raw_lines(path, [p.line for p in problems if p.line]))
        self._sidecar(dest, f"{len(problems)} line(s) of {source} refused; the other lines were processed",
                      problems, source)
        return dest

    def _sidecar(self, dest: Path, reason: str, problems: list[LineProblem], source: str) -> None:
        body = {"file": source, "reason": reason, "problems": [p.model_dump() for p in problems],
                "at": self.clock()}
        atomic_write(dest.with_name(dest.name + ".error.json"), json.dumps(body, indent=2).encode())

    def finish_file(self, path: Path) -> Path:
        dest = self.dir("done") / path.name
        os.replace(path, dest)
        return dest

    def outbox_path(self, name: str) -> Path:
        return self.dir("outbox") / name

    def append_outbox(self, name: str, result: dict[str, Any]) -> None:
        with open(self.outbox_path(name), "a", encoding="utf-8") as f:
            f.write(json.dumps(result, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def rebuild_outbox(self, name: str, results: list[dict[str, Any]]) -> None:
        """Rewrite a file's outbox from committed results (drops a torn or duplicated last line)."""
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results).encode()
        atomic_write(self.outbox_path(name), data)


SCHEMA = """
CREATE TABLE IF NOT EXISTS files(name TEXT PRIMARY KEY, source TEXT NOT NULL, state TEXT NOT NULL,
    claimed REAL NOT NULL, finished REAL, n_tasks INTEGER, n_bad INTEGER DEFAULT 0, error TEXT);
CREATE TABLE IF NOT EXISTS tasks(file TEXT NOT NULL, task_id TEXT NOT NULL, seq INTEGER NOT NULL,
    state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, result TEXT, reward REAL, finished REAL,
    error TEXT, PRIMARY KEY(file, task_id));
CREATE TABLE IF NOT EXISTS spend(ts REAL NOT NULL, rollouts INTEGER NOT NULL, tokens INTEGER NOT NULL,
    usd REAL NOT NULL, seconds REAL NOT NULL);
CREATE INDEX IF NOT EXISTS spend_ts ON spend(ts);
CREATE TABLE IF NOT EXISTS scores(ts REAL NOT NULL, reward REAL NOT NULL, source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS practice(key TEXT PRIMARY KEY, attempts INTEGER NOT NULL,
    successes INTEGER NOT NULL, streak INTEGER NOT NULL, last REAL NOT NULL);
"""


def open_state_db(path: Path) -> sqlite3.Connection:
    """Open (creating) the daemon's SQLite state in WAL mode; usable from the worker thread."""
    con = sqlite3.connect(str(path), timeout=30.0, check_same_thread=False, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.executescript(SCHEMA)
    return con
