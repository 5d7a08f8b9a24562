"""Episode summaries: the few numbers per episode that totals and curves need, kept as columns.

An episode's body is its whole search tree as JSON; parsing thousands of them to sum tokens or plot
accuracy took over a second. So each row of `episodes` also carries its summary (`SUMMARY_COLUMNS`),
written by `Episodes.add` in the same statement as the body, and `read_summaries` reads those
columns alone. `add_summary_columns` is the schema step (version 1 → 2) that adds the columns to an
existing file and fills them from the stored bodies, in pages, inside the step's transaction.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import Any

from insightloop.core.episode import Episode
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

# Column, SQL type (with the default an old row gets before it is filled).
SUMMARY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("finished", "REAL"),
    ("phase", "TEXT"),
    ("insights_used", "INTEGER NOT NULL DEFAULT 0"),
    ("rollouts", "INTEGER NOT NULL DEFAULT 0"),
    ("prompt_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("completion_tokens", "INTEGER NOT NULL DEFAULT 0"),
    ("usd", "REAL NOT NULL DEFAULT 0"),
)
SUMMARY_NAMES = tuple(name for name, _ in SUMMARY_COLUMNS)
_PAGE = 500  # bodies parsed at a time while filling an old file


class EpisodeSummary(BaseModel):
    """One episode without its tree: what it cost and how it ended."""

    id: str
    task_id: str
    family: str | None = None
    phase: str | None = None
    started: float
    finished: float | None = None
    reward: float | None = None
    correct: bool = False
    insights_used: int = 0
    rollouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    @property
    def seconds(self) -> float:
        return (self.finished or self.started) - self.started


def _usd(meta: dict[str, Any]) -> float:
    try:
        return float(meta.get("usd", 0.0) or 0.0)
    except (TypeError, ValueError):  # a cost someone wrote as text: counted as nothing
        return 0.0


def summary_values(ep: Episode) -> tuple[Any, ...]:
    """The values of `SUMMARY_COLUMNS` for an episode, in that order."""
    phase = ep.meta.get("phase")
    return (
        ep.finished,
        None if phase is None else str(phase),
        len(ep.insights_used),
        ep.rollouts,
        ep.prompt_tokens,
        ep.completion_tokens,
        _usd(ep.meta),
    )


_SELECT = "SELECT id, task_id, family, created, reward, correct, " + ", ".join(SUMMARY_NAMES) + " FROM episodes"


def read_summaries(conn: sqlite3.Connection) -> list[EpisodeSummary]:
    """Every episode's summary, oldest first (the order of `Episodes.list_episodes`)."""
    rows = conn.execute(_SELECT + " ORDER BY created, rowid").fetchall()
    keys = ("id", "task_id", "family", "started", "reward", "correct", *SUMMARY_NAMES)
    return [EpisodeSummary.model_validate(dict(zip(keys, row, strict=True))) for row in rows]


def add_summary_columns(conn: sqlite3.Connection) -> None:
    """Schema step 1 → 2: add the summary columns that are missing (a file whose version was
    reset may have them already), then fill every row from its stored body."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(episodes)")}
    for name, sql_type in SUMMARY_COLUMNS:
        if name not in have:
            conn.execute(f"ALTER TABLE episodes ADD COLUMN {name} {sql_type}")
    marks = ", ".join(f"{name} = ?" for name in SUMMARY_NAMES)
    last = 0
    while rows := conn.execute(
        "SELECT rowid, body FROM episodes WHERE rowid > ? ORDER BY rowid LIMIT ?", (last, _PAGE)
    ).fetchall():
        updates = []
        for rowid, body in rows:
            try:
                updates.append((*summary_values(Episode.model_validate_json(body)), rowid))
            except (ValidationError, ValueError) as e:
                # Unreadable here is unreadable to every reader of episodes: leave its defaults.
                log.warning("episode row %d: body unreadable, summary left empty: %s", rowid, e)
        conn.executemany(f"UPDATE episodes SET {marks} WHERE rowid = ?", updates)
        last = rows[-1][0]
