"""Inbox-task bookkeeping in daemon.sqlite: which task is next, which are finished, and commits.

A task is done exactly when its `tasks` row says so: the row is committed first, then the outbox
line is appended. Whenever a file is opened (after a restart too) or finished, its outbox is
rebuilt from the committed rows, so a crash between the commit and the append loses nothing and
duplicates nothing. Files are tracked in `files` from the moment they are claimed; a file found in
processing/ without a row (the claiming process died first) is registered when it is opened.
Files still waiting in inbox/ are parsed as they will be when claimed (once per version of each
file), so the pending count holds only valid tasks and what will be refused is counted as junk.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any, Literal

from insightloop.apps.daemon.inbox import Inbox, ParsedFile, PromptProblem, junk_count, parse_inbox_file
from insightloop.apps.daemon.state import transaction
from insightloop.core.config import DaemonConfig
from insightloop.core.episode import Episode
from insightloop.core.task import Task
from pydantic import BaseModel

FINISHED = "state IN ('done','failed')"


class TaskRef(BaseModel):
    """One inbox task: the processing/ file holding it, its position there, and the task."""

    file: str
    seq: int
    task: Task

    @property
    def label(self) -> str:
        return f"{self.file}:{self.task.id}"


def result_row(task: Task, ep: Episode) -> dict[str, Any]:
    """The outbox line for a task its episode finished (reward and correctness only when gradable)."""
    out: dict[str, Any] = {"id": task.id, "answer": ep.answer}
    if task.answer is not None:
        out["reward"] = ep.reward.score if ep.reward is not None else 0.0
        out["correct"] = ep.correct
    out.update(insights_used=list(ep.insights_used), episode_id=ep.id, rollouts=ep.rollouts,
               tokens=ep.prompt_tokens + ep.completion_tokens)
    return out


class InboxLedger:
    """The inbox files' and tasks' progress, kept in the state DB alongside the folder moves."""

    def __init__(self, con: sqlite3.Connection, inbox: Inbox, cfg: DaemonConfig, clock: Callable[[], float],
                 log: logging.Logger, prompt_problem: PromptProblem | None = None) -> None:
        self.con = con
        self.inbox = inbox
        self.cfg = cfg
        self.clock = clock
        self.log = log
        self.prompt_problem = prompt_problem
        self._parsed: dict[str, ParsedFile] = {}  # processing/ files parsed by this process
        self._peeked: dict[str, tuple[tuple[int, int], ParsedFile]] = {}  # waiting files, by (size, mtime)

    # -- what is next -------------------------------------------------------------------------------

    def next_task(self, busy: Collection[tuple[str, str]] = ()) -> TaskRef | None:
        """The next unfinished inbox task, resuming processing/ first, then claiming new files.

        `busy` holds (file, task id) pairs running elsewhere (on other workers): they are skipped,
        and a file is finished only once none of its tasks is still running.
        """
        while True:
            for path in self.inbox.processing():
                parsed = self._open(path)
                if parsed is None:
                    continue
                finished = self.finished_ids(path.name)
                running = False
                for seq, task in enumerate(parsed.tasks):
                    if task.id in finished:
                        continue
                    if (path.name, task.id) in busy:
                        running = True
                        continue
                    return TaskRef(file=path.name, seq=seq, task=task)
                if not running:
                    self._finish(path, parsed)
            if not self._claim_next():
                return None

    def _claim_next(self) -> bool:
        for path in self.inbox.waiting():
            known = {r[0] for r in self.con.execute("SELECT name FROM files")}
            dest = self.inbox.claim(path, known)
            self._register(dest.name, path.name)
            self.log.info("claimed", extra={"data": {"file": path.name, "as": dest.name}})
            return True
        return False

    def _register(self, name: str, source: str) -> str:
        """Record a processing/ file (if new); returns the inbox name it arrived under."""
        self.con.execute("INSERT OR IGNORE INTO files(name, source, state, claimed) VALUES (?,?,?,?)",
                         (name, source, "processing", self.clock()))
        return self.con.execute("SELECT source FROM files WHERE name = ?", (name,)).fetchone()[0]

    def _open(self, path: Path) -> ParsedFile | None:
        """Parse a processing/ file once per process; refuse bad lines or the whole file."""
        if path.name in self._parsed:
            return self._parsed[path.name]
        source = self._register(path.name, path.name)
        parsed = self._parse(path)
        if parsed.fatal is not None:
            self._fail(path, parsed, parsed.fatal, source)
            return None
        if parsed.rejected:
            dest = self.inbox.reject_lines(path, parsed.rejected, source)
            self.log.warning("lines_rejected", extra={"data": {"file": source, "to": dest.name,
                                                               "lines": [r.line for r in parsed.rejected]}})
        self.con.execute("UPDATE files SET n_tasks=?, n_bad=? WHERE name=?",
                         (len(parsed.tasks), len(parsed.rejected), path.name))
        self.inbox.rebuild_outbox(path.name, self._results(path.name, parsed))
        self._parsed[path.name] = parsed
        return parsed

    def _fail(self, path: Path, parsed: ParsedFile, reason: str, source: str) -> None:
        # recorded before the move: a crash in between just repeats the refusal on restart
        self.con.execute("UPDATE files SET state='failed', finished=?, n_bad=?, error=? WHERE name=?",
                         (self.clock(), max(1, len(parsed.rejected)), reason, path.name))
        self.inbox.fail_file(path, reason, parsed.rejected, source)
        self.log.warning("file_failed", extra={"data": {"file": source, "reason": reason,
                                                        "problems": len(parsed.rejected)}})

    def _finish(self, path: Path, parsed: ParsedFile) -> None:
        self.inbox.rebuild_outbox(path.name, self._results(path.name, parsed))
        self.con.execute("UPDATE files SET state='done', finished=? WHERE name=?", (self.clock(), path.name))
        self.inbox.finish_file(path)
        self._parsed.pop(path.name, None)
        self.log.info("file_done", extra={"data": {"file": path.name, "tasks": len(parsed.tasks)}})

    # -- what is finished ---------------------------------------------------------------------------

    def finished_ids(self, name: str) -> set[str]:
        rows = self.con.execute(f"SELECT task_id FROM tasks WHERE file=? AND {FINISHED}", (name,))
        return {r[0] for r in rows}

    def _results(self, name: str, parsed: ParsedFile) -> list[dict[str, Any]]:
        rows = dict(self.con.execute(f"SELECT task_id, result FROM tasks WHERE file=? AND {FINISHED}", (name,)))
        return [json.loads(rows[t.id]) for t in parsed.tasks if t.id in rows]

    def _parse(self, path: Path) -> ParsedFile:
        return parse_inbox_file(path, self.cfg.max_prompt_chars, self.cfg.max_file_bytes, self.prompt_problem)

    def _peek(self) -> list[ParsedFile]:
        """The waiting inbox files parsed as they will be when claimed; a file is parsed again only
        when its size or modification time changed."""
        out: list[ParsedFile] = []
        seen: dict[str, tuple[tuple[int, int], ParsedFile]] = {}
        for path in self.inbox.waiting():
            try:
                st = path.stat()
                version = (st.st_size, st.st_mtime_ns)
                cached = self._peeked.get(path.name)
                parsed = cached[1] if cached is not None and cached[0] == version else self._parse(path)
            except OSError:  # claimed or removed meanwhile: nothing waits there
                continue
            seen[path.name] = (version, parsed)
            out.append(parsed)
        self._peeked = seen
        return out

    def waiting(self) -> tuple[int, int]:
        """Tasks not finished yet (in the parsed processing/ files and the valid lines of waiting
        files), and junk waiting in inbox/ (what will be refused: lines, or whole files)."""
        pending = sum(len(p.tasks) - len(self.finished_ids(n)) for n, p in self._parsed.items())
        peeked = self._peek()
        return pending + sum(len(p.tasks) for p in peeked), sum(junk_count(p) for p in peeked)

    def pending(self) -> int:
        """Tasks not finished yet (see `waiting`)."""
        return self.waiting()[0]

    # -- committing ---------------------------------------------------------------------------------

    def bump_attempts(self, ref: TaskRef, error: str) -> int:
        """Count one more failed attempt at the task; returns the attempts so far."""
        with transaction(self.con):
            self.con.execute(
                "INSERT INTO tasks(file, task_id, seq, state, attempts, error) VALUES (?,?,?,'pending',1,?) "
                "ON CONFLICT(file, task_id) DO UPDATE SET attempts = attempts + 1, error = excluded.error",
                (ref.file, ref.task.id, ref.seq, error))
        row = self.con.execute("SELECT attempts FROM tasks WHERE file=? AND task_id=?",
                               (ref.file, ref.task.id)).fetchone()
        return int(row[0])

    def commit(self, ref: TaskRef, state: Literal["done", "failed"], result: dict[str, Any],
               reward: float | None) -> None:
        """Mark the task finished (the commit is what makes it done), then append its outbox line."""
        now = self.clock()
        with transaction(self.con):
            self.con.execute(
                "INSERT INTO tasks(file, task_id, seq, state, result, reward, finished) "
                "VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT(file, task_id) DO UPDATE SET state=excluded.state, result=excluded.result, "
                "reward=excluded.reward, finished=excluded.finished",
                (ref.file, ref.task.id, ref.seq, state, json.dumps(result, ensure_ascii=False), reward, now))
            if reward is not None:
                self.con.execute("INSERT INTO scores(ts, reward, source) VALUES (?,?,?)", (now, reward, "inbox"))
        self.inbox.append_outbox(ref.file, result)
        self.log.info(f"task_{state}", extra={"data": {"file": ref.file, **result}})
