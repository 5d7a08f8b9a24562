"""The memory's admitted worked examples, read without an embedder: what a fold learns from.

A worked example (`Insight.kind == "example"`) is a training problem in `text` and its verified
solution in `solution`; an active one also passed the admission test. The fold reads them straight
from `memory.sqlite`, read-only, the way `memory.episodes.load_episodes` reads episodes, so folding
never loads the embedding model.
"""

from __future__ import annotations

from pathlib import Path

from insightloop.memory import db
from insightloop.memory.db import DB_NAME
from insightloop.memory.records import Insight
from insightloop.memory.session import Session


def load_examples(run_dir: str | Path) -> list[Insight]:
    """Every active worked example with a solution in the memory of `run_dir`, oldest first; none when
    it has no memory yet."""
    path = Path(run_dir).expanduser().resolve() / DB_NAME
    if not path.is_file():
        return []
    session = Session.open(path, readonly=True)
    try:
        with session.read() as conn:
            rows = conn.execute(db.SELECT_INSIGHT + " WHERE kind = 'example' AND status = 'active' "
                                "ORDER BY created, n").fetchall()
    finally:
        session.close()
    return [ins for ins in map(db.insight_from_row, rows) if ins.solution.strip()]
