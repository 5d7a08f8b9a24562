"""Export and import of a whole memory as JSON lines, so memories move between runs and models.

Line 1 is a header (`{"type": "header", "format": "insightloop.memory", ...}`); then one object per
line: `insight` (every field, the producing model and its per-task credit), `task` (the training
problems that credit refers to), `baseline`, `attempt`. Import is one transaction and one event:
insights already present (same id and text) are skipped, near-duplicates of stored insights merge their
support, the rest are added with their statistics; existing tasks, baselines and attempts win.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from insightloop.core.config import MemoryConfig
from insightloop.core.files import atomic_write
from insightloop.memory import db
from insightloop.memory.attempts import SELECT_ATTEMPT, attempt_from_row, insert_attempt, stored_like
from insightloop.memory.credit import insert_task
from insightloop.memory.indexes import Indexes
from insightloop.memory.records import Attempt, ImportReport, Insight, TaskStats, clean_text
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors
from pydantic import BaseModel, Field, ValidationError

FORMAT = "insightloop.memory"
FORMAT_VERSION = 1


class TaskLine(BaseModel):
    id: str
    family: str | None = None
    text: str


class BaselineLine(BaseModel):
    task_id: str
    rate: float = Field(ge=0, le=1)
    n: int = Field(ge=0)


class InsightLine(BaseModel):
    insight: Insight
    task_stats: list[TaskStats] = Field(default_factory=list)


class Bundle(BaseModel):
    """A parsed export."""

    header: dict[str, Any] = Field(default_factory=dict)
    insights: list[InsightLine] = Field(default_factory=list)
    tasks: list[TaskLine] = Field(default_factory=list)
    baselines: list[BaselineLine] = Field(default_factory=list)
    attempts: list[Attempt] = Field(default_factory=list)


@dataclass
class Target:
    """The parts of the memory an import writes through."""

    session: Session
    vectors: Vectors
    indexes: Indexes
    cfg: MemoryConfig


def _insight_lines(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every insight, in the order it was stored, with its per-task credit."""
    stats: dict[str, list[dict[str, Any]]] = {}
    for row in conn.execute(db.SELECT_STAT + " ORDER BY insight_id, task_id"):
        st = db.stat_from_row(row)
        stats.setdefault(st.insight_id, []).append(st.model_dump(mode="json"))
    insights = [db.insight_from_row(r) for r in conn.execute(db.SELECT_INSIGHT + " ORDER BY n")]
    return [{"type": "insight", **i.model_dump(mode="json"), "task_stats": stats.get(i.id, [])} for i in insights]


def _other_lines(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """The training problems, baselines and attempts."""
    tasks = conn.execute("SELECT id, family, text FROM tasks ORDER BY n").fetchall()
    baselines = conn.execute("SELECT task_id, rate, n FROM baselines ORDER BY task_id").fetchall()
    attempts = [attempt_from_row(r) for r in conn.execute(SELECT_ATTEMPT + " ORDER BY n")]
    return (
        [{"type": "task", "id": t[0], "family": t[1], "text": t[2]} for t in tasks]
        + [{"type": "baseline", "task_id": b[0], "rate": b[1], "n": b[2]} for b in baselines]
        + [{"type": "attempt", **a.model_dump(mode="json")} for a in attempts]
    )


def _lines(session: Session, run_dir: Path) -> list[dict[str, Any]]:
    """The header and every line, from one committed snapshot."""
    with session.read() as conn:
        header = {
            "type": "header",
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "memory_version": db.current_version(conn),
            "run_dir": str(run_dir),
        }
        return [header, *_insight_lines(conn), *_other_lines(conn)]


def export_jsonl(session: Session, run_dir: Path, path: Path) -> int:
    """Write one consistent snapshot of the memory of `run_dir` to `path` (temp file, then
    `os.replace`); returns the lines written."""
    lines = _lines(session, run_dir)
    path = path.expanduser()
    atomic_write(path, "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines))
    return len(lines)


def _add_line(bundle: Bundle, data: dict[str, Any]) -> None:
    kind = data.pop("type", None)
    if kind == "header":
        if data.get("format") != FORMAT:
            raise ValueError(f"not an insightloop memory export (format {data.get('format')!r})")
        bundle.header = data
    elif kind == "insight":
        stats = data.pop("task_stats", [])
        bundle.insights.append(InsightLine(insight=Insight.model_validate(data), task_stats=stats))
    elif kind == "task":
        bundle.tasks.append(TaskLine.model_validate(data))
    elif kind == "baseline":
        bundle.baselines.append(BaselineLine.model_validate(data))
    elif kind == "attempt":
        bundle.attempts.append(Attempt.model_validate(data))
    else:
        raise ValueError(f"unknown line type {kind!r}")


def read_bundle(path: Path) -> Bundle:
    """Parse and validate an export; errors name the line."""
    bundle = Bundle()
    with path.expanduser().open(encoding="utf-8") as fh:
        for number, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
                if not isinstance(data, dict):
                    raise ValueError("expected a JSON object")
                _add_line(bundle, data)
            except (ValueError, ValidationError) as e:
                raise ValueError(f"{path}:{number}: {e}") from e
    if not bundle.header:
        raise ValueError(f"{path}: no header line; is this an insightloop memory export?")
    return bundle


class Plan(BaseModel):
    """Incoming insights split into new ones and merges (incoming id → stored row number)."""

    model_config = {"arbitrary_types_allowed": True}
    new: list[InsightLine]
    merges: dict[str, int]
    skipped: int
    vecs: dict[str, Any]


def _rename(line: InsightLine, new_id: str) -> None:
    line.insight = line.insight.model_copy(update={"id": new_id})
    line.task_stats = [st.model_copy(update={"insight_id": new_id}) for st in line.task_stats]


def _incoming(target: Target, bundle: Bundle) -> list[InsightLine]:
    """The insights not already stored; one whose id is taken by another lesson gets a fresh id."""
    with target.session.read() as conn:
        present = {r[0]: r[1] for r in conn.execute("SELECT id, text FROM insights")}
    cap = target.cfg.max_insight_chars
    for line in bundle.insights:
        line.insight.text = clean_text(line.insight.text, cap) or line.insight.text
    incoming = []
    for line in bundle.insights:
        if present.get(line.insight.id) == line.insight.text:
            continue  # already here: an earlier import of the same memory
        if line.insight.id in present:
            # Same id, different lesson (ids from another run): keep both under a fresh id.
            fresh = target.session.new_id("i")
            while fresh in present:
                fresh = target.session.new_id("i")
            _rename(line, fresh)
        incoming.append(line)
    return incoming


def _plan_insights(target: Target, bundle: Bundle) -> Plan:
    """Embed incoming insights (outside the write transaction) and find stored near-duplicates."""
    incoming = _incoming(target, bundle)
    texts = [line.insight.text for line in incoming]
    vecs = dict(zip([line.insight.id for line in incoming], target.vectors.embed(texts), strict=True))
    plan = Plan(new=[], merges={}, skipped=len(bundle.insights) - len(incoming), vecs=vecs)
    for line in incoming:
        near = target.indexes.nearest(vecs[line.insight.id])
        if near is not None and near[1] >= target.cfg.dedup_threshold:
            plan.merges[line.insight.id] = near[0]
        else:
            plan.new.append(line)
    return plan


def _merged(existing: Insight, other: Insight) -> Insight:
    """A stored insight with the support and sources of an incoming near-duplicate added."""
    support = int(existing.meta.get("support", 1)) + int(other.meta.get("support", 1))
    return existing.model_copy(
        update={
            "source_episodes": list(dict.fromkeys(existing.source_episodes + other.source_episodes)),
            "source_tasks": list(dict.fromkeys(existing.source_tasks + other.source_tasks)),
            "meta": {**existing.meta, "support": support},
        }
    )


def _write_insights(tx: db.Tx, bundle: Bundle, plan: Plan, report: ImportReport) -> None:
    for line in plan.new:
        tx.put(line.insight, plan.vecs[line.insight.id])
        for st in line.task_stats:
            tx.put_stat(st)
    report.added, report.skipped = len(plan.new), plan.skipped
    by_id = {line.insight.id: line.insight for line in bundle.insights}  # after any renaming
    for incoming_id, n in plan.merges.items():
        row = tx.conn.execute("SELECT id FROM insights WHERE n = ?", (n,)).fetchone()
        existing = tx.get(row[0]) if row else None
        if existing is None:
            continue
        tx.put(_merged(existing, by_id[incoming_id]))
        report.merged += 1


def _write_others(
    tx: db.Tx, bundle: Bundle, report: ImportReport, task_vecs: np.ndarray, attempt_vecs: np.ndarray
) -> None:
    """Tasks, baselines and attempts; the stored ones win."""
    for t, vec in zip(bundle.tasks, task_vecs, strict=True):
        report.tasks += insert_task(tx.conn, t.id, t.family, t.text, tx.now, vec)
    for b in bundle.baselines:
        cur = tx.conn.execute(
            "INSERT OR IGNORE INTO baselines (task_id, rate, n, updated) VALUES (?, ?, ?, ?)",
            (b.task_id, b.rate, b.n, tx.now),
        )
        report.baselines += cur.rowcount
    for a, vec in zip(bundle.attempts, attempt_vecs, strict=True):
        if stored_like(tx.conn, a) is None:
            insert_attempt(tx.conn, a, vec)
            report.attempts += 1


def import_jsonl(target: Target, path: Path) -> ImportReport:
    """Merge an export into the memory (see the module docstring)."""
    bundle = read_bundle(path)
    report = ImportReport()
    task_vecs = target.vectors.embed([t.text for t in bundle.tasks])
    attempt_vecs = target.vectors.embed([a.task_text for a in bundle.attempts])
    with target.session.lock:
        plan = _plan_insights(target, bundle)
        with target.session.write("import") as tx:
            _write_insights(tx, bundle, plan, report)
            _write_others(tx, bundle, report, task_vecs, attempt_vecs)
            tx.payload = {
                "source": str(path),
                "from_version": bundle.header.get("memory_version"),
                **report.model_dump(),
            }
    return report
