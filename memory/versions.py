"""Memory versions: the state of the insights at any version, rebuilt from the event snapshots,
and the difference between two states (what `diff` shows and what `rollback` undoes).
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from insightloop.memory.records import Insight, InsightChange, MemoryDiff, MemoryEvent

Rows = dict[str, dict[str, Any]]
StatRows = dict[tuple[str, str], dict[str, Any]]


def event_from_row(version: int, ts: float, kind: str, payload: str) -> MemoryEvent:
    data = json.loads(payload)
    data.pop("rows", None)
    data.pop("stats", None)
    return MemoryEvent(version=version, ts=ts, kind=kind, payload=data)


def list_events(conn: sqlite3.Connection, since: int = 0, until: int | None = None) -> list[MemoryEvent]:
    """Events with `since < version <= until`, oldest first, without their row snapshots."""
    sql = "SELECT version, ts, kind, payload FROM events WHERE version > ?"
    args: list[int] = [since]
    if until is not None:
        sql += " AND version <= ?"
        args.append(until)
    return [event_from_row(*row) for row in conn.execute(sql + " ORDER BY version", args)]


def state_at(conn: sqlite3.Connection, version: int) -> tuple[Rows, StatRows]:
    """Insight rows and per-task credit rows as they were right after `version` (replayed)."""
    rows: Rows = {}
    stats: StatRows = {}
    cur = conn.execute("SELECT payload FROM events WHERE version <= ? ORDER BY version", (version,))
    for (payload,) in cur:
        data = json.loads(payload)
        for insight_id, row in data.get("rows", {}).items():
            if row is None:
                rows.pop(insight_id, None)
            else:
                rows[insight_id] = row
        for insight_id, task_id, row in data.get("stats", []):
            if row is None:
                stats.pop((insight_id, task_id), None)
            else:
                stats[(insight_id, task_id)] = row
    return rows, stats


def _insight(row: dict[str, Any]) -> Insight:
    return Insight.model_validate({k: v for k, v in row.items() if not k.startswith("_")})


def diff_rows(before: Rows, after: Rows, v1: int, v2: int, events: list[MemoryEvent]) -> MemoryDiff:
    out = MemoryDiff(v1=v1, v2=v2, events=events)
    for insight_id in sorted(before.keys() | after.keys()):
        a, b = before.get(insight_id), after.get(insight_id)
        if a is None and b is not None:
            out.added.append(_insight(b))
        elif b is None and a is not None:
            out.removed.append(_insight(a))
        elif a is not None and b is not None:
            fields = {
                k: (a.get(k), b.get(k))
                for k in sorted(a.keys() | b.keys())
                if not k.startswith("_") and a.get(k) != b.get(k)
            }
            if fields:
                out.changed.append(
                    InsightChange(id=insight_id, fields=fields, before=_insight(a), after=_insight(b))
                )
    return out


def diff(conn: sqlite3.Connection, v1: int, v2: int) -> MemoryDiff:
    """Changes from version v1 to v2 (v2 < v1 gives the reverse changes)."""
    lo, hi = min(v1, v2), max(v1, v2)
    before, _ = state_at(conn, v1)
    after, _ = state_at(conn, v2)
    return diff_rows(before, after, v1, v2, list_events(conn, lo, hi))
