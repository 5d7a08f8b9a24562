"""`Episodes`: every solved episode of a run, kept whole in the run's memory database.

The memory database is the one place episodes live: the console lists them, the fold learns from
them. Each row also carries the episode's summary (`memory.summaries`), written in the same
statement, so totals and curves never parse the bodies. `open_episodes` opens this part alone,
without an embedder, for callers that only store or read episodes (`insightloop solve --run-dir`,
the fold); `load_episodes` reads them all.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from insightloop.core.episode import Episode
from insightloop.memory.db import DB_NAME
from insightloop.memory.session import Session
from insightloop.memory.summaries import SUMMARY_NAMES, EpisodeSummary, read_summaries, summary_values

_COLUMNS = ("id", "task_id", "family", "reward", "correct", "created", "body", *SUMMARY_NAMES)
_INSERT = f"INSERT OR REPLACE INTO episodes ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"


class Episodes:
    """Storing and reading episodes (see the module docstring)."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, episode: Episode | dict[str, Any]) -> Episode:
        """Store (or replace) an episode record."""
        ep = episode if isinstance(episode, Episode) else Episode.model_validate(episode)
        reward = ep.reward.score if ep.reward is not None else None
        with self.session.write("episode") as tx:
            tx.conn.execute(
                _INSERT,
                (ep.id, ep.task.id, ep.task.family, reward, int(ep.correct), ep.started, ep.model_dump_json(),
                 *summary_values(ep)),
            )
            tx.payload = {
                "id": ep.id,
                "task_id": ep.task.id,
                "reward": reward,
                "insight_ids": list(ep.insights_used),
            }
        return ep

    def get(self, episode_id: str) -> Episode:
        """The episode with this id; KeyError if there is none."""
        with self.session.read() as conn:
            row = conn.execute("SELECT body FROM episodes WHERE id = ?", (episode_id,)).fetchone()
        if row is None:
            raise KeyError(f"no episode {episode_id!r}")
        return Episode.model_validate_json(row[0])

    def list_episodes(self, failed_only: bool = False, limit: int | None = None) -> list[Episode]:
        """Episodes, oldest first (the last `limit` when given)."""
        sql = "SELECT body FROM episodes" + (" WHERE correct = 0" if failed_only else "")
        sql += " ORDER BY created DESC, rowid DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
        with self.session.read() as conn:
            bodies = [r[0] for r in conn.execute(sql)]
        return [Episode.model_validate_json(b) for b in reversed(bodies)]

    def summaries(self) -> list[EpisodeSummary]:
        """Every episode's summary (no tree), oldest first: for totals and curves."""
        with self.session.read() as conn:
            return read_summaries(conn)

    def by_id(self) -> list[Episode]:
        """Every episode, in id order: an order that does not depend on clocks, for seeded sampling."""
        with self.session.read() as conn:
            bodies = [r[0] for r in conn.execute("SELECT body FROM episodes ORDER BY id")]
        return [Episode.model_validate_json(b) for b in bodies]


@contextmanager
def open_episodes(run_dir: str | Path, readonly: bool = False) -> Iterator[Episodes]:
    """The episodes part alone on the memory of `run_dir` (a writer creates it); closed on exit."""
    session = Session.open(Path(run_dir).expanduser().resolve() / DB_NAME, readonly)
    try:
        yield Episodes(session)
    finally:
        session.close()


def load_episodes(run_dir: str | Path) -> list[Episode]:
    """Every episode stored in the memory of `run_dir`, in id order; none when it has no memory yet."""
    if not (Path(run_dir).expanduser() / DB_NAME).is_file():
        return []
    with open_episodes(run_dir, readonly=True) as episodes:
        return episodes.by_id()
