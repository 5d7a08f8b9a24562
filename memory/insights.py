"""`Insights`: the lessons themselves — added (near-duplicates merged), edited, admitted, retired.

Every change is one write transaction and one event. An added text is cleaned and length-capped; one
within `cfg.dedup_threshold` cosine of any stored insight (retired ones included, so a harmful lesson
is not readmitted under new wording) merges its support into that insight instead of being added.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from insightloop.core.config import MemoryConfig
from insightloop.memory import db
from insightloop.memory.indexes import Indexes
from insightloop.memory.records import Insight, InsightKind, InsightStatus, clean_block, clean_text
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors

# A worked example keeps its layout and may be longer than a rule: a problem and its solution.
EXAMPLE_CHARS = 2000

_SORTS = {
    "utility": "CASE WHEN uses > 0 THEN utility_sum / uses ELSE 0 END DESC, uses DESC, n",
    "uses": "uses DESC, n",
    "recent": "created DESC, n DESC",
}


def rows_by_n(conn: sqlite3.Connection, ns: list[int]) -> dict[int, tuple[Insight, bytes | None]]:
    """Insights (with their stored vectors) by row number, for the rows that still exist."""
    if not ns:
        return {}
    marks = ",".join("?" * len(ns))
    cols = ", ".join(db.INSIGHT_COLUMNS)
    rows = conn.execute(f"SELECT n, embedding, {cols} FROM insights WHERE n IN ({marks})", ns)
    return {r[0]: (db.insight_from_row(r[2:]), r[1]) for r in rows}


class Insights:
    """Reading and changing insights (see the module docstring)."""

    def __init__(self, session: Session, vectors: Vectors, indexes: Indexes, cfg: MemoryConfig) -> None:
        self.session = session
        self.vectors = vectors
        self.indexes = indexes
        self.cfg = cfg

    # ---- reading -----------------------------------------------------------------------------
    def get(self, insight_id: str) -> Insight:
        """The insight with this id; KeyError if there is none."""
        with self.session.read() as conn:
            row = conn.execute(db.SELECT_INSIGHT + " WHERE id = ?", (insight_id,)).fetchone()
        if row is None:
            raise KeyError(f"no insight {insight_id!r}")
        return db.insight_from_row(row)

    def list_insights(
        self,
        status: InsightStatus | None = None,
        sort: str = "utility",
        limit: int | None = None,
        family: str | None = None,
    ) -> list[Insight]:
        """Insights, optionally of one status / family, sorted by utility, uses or recency."""
        if sort not in _SORTS:
            raise ValueError(f"sort must be one of {sorted(_SORTS)}, got {sort!r}")
        where, args = [], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if family is not None:
            where.append("family = ?")
            args.append(family)
        sql = db.SELECT_INSIGHT + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY " + _SORTS[sort]
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self.session.read() as conn:
            return [db.insight_from_row(r) for r in conn.execute(sql, args)]

    # ---- adding and merging ------------------------------------------------------------------
    def _clean(self, text: str) -> str:
        text = clean_text(text, self.cfg.max_insight_chars)
        if not text:
            raise ValueError("an insight needs some text (it was empty after cleaning)")
        return text

    def add(
        self,
        text: str,
        kind: InsightKind = "strategy",
        applies_when: str = "",
        family: str | None = None,
        source_episode: str | None = None,
        source_task: str | None = None,
        model: str = "",
        meta: dict[str, Any] | None = None,
        status: InsightStatus = "pending",
        solution: str = "",
    ) -> tuple[Insight, bool]:
        """Add a candidate insight (cleaned and length-capped); True if it is new. A near-duplicate
        (cosine >= cfg.dedup_threshold with any stored insight, retired ones included, so a harmful
        lesson is not readmitted under new wording) merges its support into the existing one."""
        example = kind == "example"
        text = clean_block(text, EXAMPLE_CHARS) if example else self._clean(text)
        draft = Insight(
            solution=clean_block(solution, EXAMPLE_CHARS) if example else "",
            id="new",  # the real id is drawn inside the write transaction
            text=text,
            kind=kind,
            applies_when=clean_text(applies_when, self.cfg.max_insight_chars),
            family=family,
            status=status,
            source_episodes=[source_episode] if source_episode else [],
            source_tasks=[source_task] if source_task else [],
            model=model,
            meta=dict(meta or {}),
        )
        vec = self.vectors.one(text)
        with self.session.lock:
            # Rules merge with a near-duplicate of any kind; a worked example only with the same problem's.
            near = None if example else self.indexes.nearest(vec)
            with self.session.write("add") as tx:
                existing = _same_example(tx, text) if example else None
                if existing is not None:
                    return self._merge(tx, existing, source_episode, source_task, 1.0), False
                if near is not None and near[1] >= self.cfg.dedup_threshold:
                    existing = _by_n(tx, near[0])
                    if existing is not None:
                        return self._merge(tx, existing, source_episode, source_task, near[1]), False
                ins = draft.model_copy(update={"id": self.session.fresh_insight_id(tx), "created": tx.now})
                tx.payload = {"insight_id": ins.id, "status": status, "text": text}
                return tx.put(ins, vec), True

    def _append_source(self, values: list[str], new: str | None) -> list[str]:
        if not new or new in values:
            return values
        return (values + [new])[-self.cfg.max_sources :]

    def _merge(
        self, tx: db.Tx, existing: Insight, episode: str | None, task: str | None, sim: float
    ) -> Insight:
        meta = {**existing.meta, "support": int(existing.meta.get("support", 1)) + 1}
        merged = existing.model_copy(
            update={
                "source_episodes": self._append_source(existing.source_episodes, episode),
                "source_tasks": self._append_source(existing.source_tasks, task),
                "meta": meta,
            }
        )
        tx.kind = "merge"
        tx.payload = {"insight_id": existing.id, "similarity": round(sim, 4), "support": meta["support"]}
        return tx.put(merged)

    # ---- changing one insight ----------------------------------------------------------------
    def _update(
        self, kind: str, insight_id: str, payload: dict[str, Any], change: Callable[[Insight], Insight]
    ) -> Insight:
        with self.session.write(kind) as tx:
            ins = tx.get(insight_id)
            if ins is None:
                raise KeyError(f"no insight {insight_id!r}")
            tx.payload = {"insight_id": insight_id, **payload}
            return tx.put(change(ins))

    def edit(self, insight_id: str, text: str) -> Insight:
        """Replace the text (cleaned, capped, re-embedded); its statistics stay."""
        text = self._clean(text)
        current = self.get(insight_id)
        if current.text == text:
            return current
        vec = self.vectors.one(text)
        with self.session.write("edit") as tx:
            ins = tx.get(insight_id)
            if ins is None:
                raise KeyError(f"no insight {insight_id!r}")
            tx.payload = {"insight_id": insight_id, "text": text, "previous": ins.text}
            return tx.put(ins.model_copy(update={"text": text}), vec)

    def record_admission(self, insight_id: str, admitted: bool, reason: str = "") -> Insight:
        """The admission test's verdict: a pending insight becomes active, or retired with the
        reason. On an insight that is no longer pending the verdict is only recorded in `meta`."""

        def change(ins: Insight) -> Insight:
            # Keep what the test measured (gains, bounds) beside its verdict.
            meta = {**ins.meta, "admission": {**ins.meta.get("admission", {}), "admitted": admitted,
                                              "reason": reason}}
            status = ins.status
            if ins.status == "pending":
                status = "active" if admitted else "retired"
                if not admitted:
                    meta["status_reason"] = reason
            return ins.model_copy(update={"status": status, "meta": meta})

        return self._update("admission", insight_id, {"admitted": admitted, "reason": reason}, change)

    def set_status(self, insight_id: str, status: InsightStatus, reason: str = "") -> Insight:
        """Set the status by hand (curation), with the reason kept in `meta`."""
        return self._update(
            "status",
            insight_id,
            {"status": status, "reason": reason},
            lambda i: i.model_copy(update={"status": status, "meta": {**i.meta, "status_reason": reason}}),
        )

    def mark_absorbed(self, insight_id: str, checkpoint: str | None = None) -> Insight:
        """Record that the insight was folded into the weights (of `checkpoint`; default: the
        run's current checkpoint in kv["checkpoint"], if any)."""
        checkpoint = checkpoint if checkpoint is not None else self.session.kv_get("checkpoint")
        label = checkpoint if checkpoint is None or isinstance(checkpoint, str) else json.dumps(checkpoint)
        return self._update(
            "absorb",
            insight_id,
            {"checkpoint": label},
            lambda i: i.model_copy(update={"absorbed": True, "meta": {**i.meta, "absorbed_into": label}}),
        )

    # ---- retiring ----------------------------------------------------------------------------
    def retire_if_harmful(self) -> list[Insight]:
        """Retire every active insight whose utility upper bound (z = cfg.retire_z) is below zero
        after at least cfg.retire_min_uses uses. One event for the whole batch."""
        z = self.cfg.retire_z
        harmful = [
            i
            for i in self.list_insights(status="active")
            if i.uses >= self.cfg.retire_min_uses and i.utility_bounds(z)[1] < 0
        ]
        if not harmful:
            return []
        out: list[Insight] = []
        with self.session.write("retire") as tx:
            for ins in harmful:
                fresh = tx.get(ins.id)
                if fresh is None or fresh.status != "active":
                    continue  # changed since it was listed
                hi = fresh.utility_bounds(z)[1]
                reason = f"harmful: utility {fresh.utility:+.3f}, upper bound {hi:+.3f} after {fresh.uses} uses"
                meta = {**fresh.meta, "status_reason": reason}
                out.append(tx.put(fresh.model_copy(update={"status": "retired", "meta": meta})))
            tx.payload = {"insight_ids": [i.id for i in out], "reason": "utility confidently below zero"}
        return out


def _by_n(tx: db.Tx, n: int) -> Insight | None:
    """The insight at row number `n` (as an index search names it), if it still exists."""
    row = tx.conn.execute("SELECT id FROM insights WHERE n = ?", (n,)).fetchone()
    return tx.get(row[0]) if row else None


def _same_example(tx: db.Tx, problem: str) -> Insight | None:
    """The stored worked example of the same problem, if any."""
    row = tx.conn.execute(db.SELECT_INSIGHT + " WHERE kind = 'example' AND text = ?", (problem,)).fetchone()
    return db.insight_from_row(row) if row else None
