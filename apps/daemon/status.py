"""Daemon observability: the `status.json` record, its atomic writer, and JSON-lines logs.

`status.json` is rewritten whole (temp file + `os.replace`) so a reader never sees half a file.
Logs go to `RUN_DIR/logs/daemon.jsonl` through the stdlib `RotatingFileHandler`, one JSON object
per line; the learning loop's typed events are logged as they arrive.

`read_status` tells three cases apart: no status.json (None: no daemon has run there), a readable
one (`DaemonStatus`), and a damaged one (`UnreadableStatus`: not UTF-8, not JSON, not a status
record), which the daemon replaces at its next start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import logging.handlers
import os
import threading
from pathlib import Path
from typing import Any

from insightloop.core.events import Event
from insightloop.core.files import atomic_write
from pydantic import BaseModel, Field, ValidationError

STATUS_FILE = "status.json"
LOG_FILE = "daemon.jsonl"


class Counters(BaseModel):
    """Inbox tasks done / failed / still pending (valid task lines only), junk waiting in inbox/
    (lines, or whole files, that will be refused to failed/), and self-practice episodes run."""

    done: int = 0
    failed: int = 0
    pending: int = 0
    junk: int = 0
    practice: int = 0
    files_done: int = 0
    files_failed: int = 0


class CapUse(BaseModel):
    """One budget cap over its sliding window: spent, cap (None = unlimited), what is left."""

    window: str
    used: float = 0.0
    cap: float | None = None
    left: float | None = None


class WorkerStatus(BaseModel):
    """One episode worker of a daemon run with `--workers N` (Ray): what it does, how it fares, and
    whether it had to be replaced (`replaced` times; `note` says why the last time)."""

    name: str
    state: str = "starting"
    pid: int | None = None
    node: str | None = None
    current_task: str | None = None
    episodes: int = 0
    failures: int = Field(0, description="failed episodes in a row")
    replaced: int = 0
    note: str | None = None


class FoldRecord(BaseModel):
    """One fold of the run's weights as status.json shows it (read from its checkpoint manifest): the
    verdict, the gate's paired numbers on the held-out problems, and how long it took."""

    index: int
    status: str = Field(description="accepted, rejected, or pending (a fold in progress or interrupted)")
    method: str
    steps: int
    lora: bool = False
    old_accuracy: float | None = None
    new_accuracy: float | None = None
    n: int | None = Field(None, description="held-out problems the gate measured")
    rule: str | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    reason: str | None = None
    seconds: float | None = None
    finished: float | None = None


class DaemonStatus(BaseModel):
    """What `status.json` holds (`workers` only for a daemon running episodes on Ray workers; `folds`
    the most recent weight folds, newest last, and `fold_totals` all of them by verdict)."""

    state: str = "starting"
    pid: int = Field(default_factory=os.getpid)
    run_dir: str = ""
    current_task: str | None = None
    counters: Counters = Field(default_factory=Counters)
    budget: dict[str, CapUse] = Field(default_factory=dict)
    checkpoint: str | None = None
    memory_version: int | None = None
    accuracy: float | None = None
    accuracy_n: int = 0
    last_error: str | None = None
    paused_until: float | None = None
    started_at: float = 0.0
    updated_at: float = 0.0
    workers: list[WorkerStatus] = Field(default_factory=list)
    folds: list[FoldRecord] = Field(default_factory=list)
    fold_totals: dict[str, int] = Field(default_factory=dict)


def write_status(run_dir: Path, status: DaemonStatus) -> Path:
    """Write RUN_DIR/status.json atomically."""
    dest = Path(run_dir) / STATUS_FILE
    atomic_write(dest, status.model_dump_json(indent=2))
    return dest


class UnreadableStatus(DaemonStatus):
    """A status.json that exists but cannot be read. A `DaemonStatus` whose `state` says so, so that
    a reader showing any status reports it as unreadable rather than as "no daemon has run there";
    `reason` says what is wrong. Its other fields are defaults, not the lost values."""

    reason: str
    pid: int = 0  # no process is known to have written it


def _unreadable(path: Path, reason: str) -> UnreadableStatus:
    mtime = 0.0
    with contextlib.suppress(OSError):  # removed meanwhile: the time is unknown
        mtime = path.stat().st_mtime
    return UnreadableStatus(
        reason=reason, run_dir=str(path.parent), updated_at=mtime,
        state=f"status.json is unreadable ({reason}); the daemon rewrites it at its next start")


def _invalid_reason(exc: ValidationError) -> str:
    first = exc.errors()[0]
    if first["type"] == "json_invalid":
        return f"invalid JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    where = ".".join(str(part) for part in first["loc"]) or "the record"
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"not a status record: {where}: {first['msg']}{more}"


def read_status(run_dir: Path) -> DaemonStatus | None:
    """The last status written under RUN_DIR; None when there is none; an `UnreadableStatus` when
    the file is damaged (never raises for a bad file)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return _unreadable(path, f"cannot read it: {exc.strerror or exc}")
    try:
        return DaemonStatus.model_validate_json(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return _unreadable(path, f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}")
    except ValidationError as exc:
        return _unreadable(path, _invalid_reason(exc))


class StatusBoard:
    """The live status, shared between the worker (which updates it) and the status writer."""

    def __init__(self, status: DaemonStatus) -> None:
        self._status = status
        self._lock = threading.Lock()

    def update(self, **fields: Any) -> None:
        with self._lock:
            for k, v in fields.items():
                setattr(self._status, k, v)

    def snapshot(self, now: float) -> DaemonStatus:
        with self._lock:
            snap = self._status.model_copy(deep=True)
        snap.updated_at = now
        return snap


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, msg, plus the record's `data` mapping if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": record.created, "level": record.levelname.lower(),
                               "msg": record.getMessage()}
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            out.update(data)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def open_log(run_dir: Path, max_bytes: int, backups: int) -> logging.Logger:
    """A logger writing rotated JSON lines to RUN_DIR/logs/daemon.jsonl (one logger per run dir)."""
    logs = Path(run_dir) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    logger = logging.getLogger(f"insightloop.daemon.{Path(run_dir).resolve()}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    close_log(logger)
    handler = logging.handlers.RotatingFileHandler(
        logs / LOG_FILE, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    return logger


def close_log(logger: logging.Logger) -> None:
    for h in list(logger.handlers):
        h.close()
        logger.removeHandler(h)


def log_event(logger: logging.Logger, event: Event) -> None:
    """Log one learning-loop event as a JSON line (long texts are cut so lines stay small)."""
    data = {k: (v[:500] if isinstance(v, str) else v) for k, v in event.model_dump(mode="json").items()}
    logger.info(event.kind, extra={"data": {"event": data}})
