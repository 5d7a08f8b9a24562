"""The daemon's inbox: task files moving `inbox/ → processing/ → done/ | failed/`, and the outbox.

A file is claimed by an atomic `os.replace` into `processing/` (under a name never used before in
this run dir, so results never mix). It is parsed with the JSONL task parser
(`evals.suites.jsonl.parse_task_file`), which gives every line's number and bytes with its task or
its problem; the inbox adds its own limits (file size, prompt length). Bad lines go to
`failed/<stem>.rejected.jsonl` with a sidecar `<that>.error.json` giving line numbers and reasons,
good lines proceed; a file with no good line goes to `failed/` whole, with its sidecar. A prompt
longer than `daemon.max_prompt_chars`, or one the policy's context cannot hold (`prompt_problem`,
the runtime's `PromptLimit`), is a bad line like any other.

Results are appended to `outbox/<name>`; `rebuild_outbox` rewrites it (atomically) from the
committed results whenever a file is resumed or finished, so the outbox ends with exactly one line
per task even if the process died between a commit and its append (see `ledger.py`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from insightloop.core.files import atomic_write
from insightloop.core.task import Task
from insightloop.evals.suites.jsonl import LineProblem, TaskLine, parse_task_file
from pydantic import BaseModel, Field

SUBDIRS = ("inbox", "processing", "done", "failed", "outbox")
IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".swp")

PromptProblem = Callable[[Task], str | None]  # why a task's prompt is refused, or None


class ParsedFile(BaseModel):
    """An inbox file after parsing: its good tasks in file order, its refused lines (each with its
    problem), or a reason to refuse the whole file."""

    name: str
    tasks: list[Task] = Field(default_factory=list)
    rejected: list[TaskLine] = Field(default_factory=list)
    fatal: str | None = None


def _refuse(entry: TaskLine, path: Path, message: str) -> TaskLine:
    """A parsed line turned into a refused one (it broke an inbox limit)."""
    problem = LineProblem(path=str(path), line=entry.line, message=message)
    return entry.model_copy(update={"task": None, "problem": problem})


def _file_fault(path: Path, max_file_bytes: int) -> str | None:
    """Why the whole file is refused before reading it, if it is."""
    if not path.name.endswith(".jsonl"):
        return "not a .jsonl file: the inbox takes JSON-lines task files named *.jsonl (one task object per line)"
    size = path.stat().st_size
    if size > max_file_bytes:
        return (f"file is {size} bytes; the limit is {max_file_bytes} "
                "(daemon.max_file_bytes): split it into smaller files")
    return None


def _prompt_fault(task: Task, max_prompt_chars: int, prompt_problem: PromptProblem | None) -> str | None:
    """Why the inbox refuses this task's prompt: too many characters, or more than the context holds."""
    if len(task.prompt) > max_prompt_chars:
        return (f"task {task.id!r}: the prompt has {len(task.prompt)} characters; "
                f"the limit is {max_prompt_chars} (daemon.max_prompt_chars)")
    return prompt_problem(task) if prompt_problem is not None else None


def parse_inbox_file(path: Path, max_prompt_chars: int, max_file_bytes: int,
                     prompt_problem: PromptProblem | None = None) -> ParsedFile:
    """Parse one claimed file. Never raises on bad input: reasons end up in `rejected` / `fatal`."""
    fault = _file_fault(path, max_file_bytes)
    if fault is not None:
        return ParsedFile(name=path.name, fatal=fault)
    good: list[Task] = []
    rejected: list[TaskLine] = []
    for entry in parse_task_file(path):
        task = entry.task
        problem = _prompt_fault(task, max_prompt_chars, prompt_problem) if task is not None else None
        if problem is not None:
            entry = _refuse(entry, path, problem)
        if entry.task is not None:
            good.append(entry.task)
        else:
            rejected.append(entry)
    fatal = None
    if not good:
        fatal = "no valid task in the file" if rejected else "the file holds no task (it is empty)"
    return ParsedFile(name=path.name, tasks=good, rejected=rejected, fatal=fatal)


def junk_count(parsed: ParsedFile) -> int:
    """What of a parsed file will go to failed/: its refused lines, or 1 for a file refused whole
    before any line was read (wrong name, too large, empty)."""
    return len(parsed.rejected) or int(parsed.fatal is not None)


def _problem_rows(rejected: list[TaskLine]) -> list[dict[str, Any]]:
    """The sidecar's `problems`: 1-based line number and reason per refused line."""
    return [{"line": r.line, "reason": r.problem.message if r.problem else "refused"} for r in rejected]


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

    def fail_file(self, path: Path, reason: str, rejected: list[TaskLine], source: str) -> Path:
        """Move a whole file to failed/ with its `<name>.error.json` sidecar (sidecar first)."""
        dest = self.dir("failed") / path.name
        self._sidecar(dest, reason, rejected, source)
        os.replace(path, dest)
        return dest

    def reject_lines(self, path: Path, rejected: list[TaskLine], source: str) -> Path:
        """Write a file's refused lines, as read, to failed/<stem>.rejected.jsonl, with a sidecar saying why."""
        stem = path.name[:-6] if path.name.endswith(".jsonl") else path.name
        dest = self.dir("failed") / f"{stem}.rejected.jsonl"
        atomic_write(dest, b"".join(r.raw + b"\n" for r in rejected))
        self._sidecar(dest, f"{len(rejected)} line(s) of {source} refused; the other lines were processed",
                      rejected, source)
        return dest

    def _sidecar(self, dest: Path, reason: str, rejected: list[TaskLine], source: str) -> None:
        body = {"file": source, "reason": reason, "problems": _problem_rows(rejected), "at": self.clock()}
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
