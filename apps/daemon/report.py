"""The daemon's live status: counters, spend, accuracy, memory and checkpoint, and status.json.

The worker refreshes the `StatusBoard` after every step (that reads the state DB, so only the worker
does it); `write_if_due` only snapshots the board, so the main thread can call it while the worker
is inside an episode.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from insightloop.apps.daemon.ledger import InboxLedger
from insightloop.apps.daemon.status import Counters, DaemonStatus, StatusBoard, write_status
from insightloop.apps.daemon.windows import SpendWindows
from insightloop.core.config import DaemonConfig


class StatusReporter:
    """Fills the status board from the daemon's state and writes it to RUN_DIR/status.json."""

    def __init__(self, run_dir: Path, board: StatusBoard, con: sqlite3.Connection, ledger: InboxLedger,
                 windows: SpendWindows, cfg: DaemonConfig, clock: Callable[[], float],
                 memory_version: Callable[[], int] | None = None,
                 checkpoint: Callable[[], str | None] | None = None) -> None:
        self.run_dir = run_dir
        self.board = board
        self.con = con
        self.ledger = ledger
        self.windows = windows
        self.cfg = cfg
        self.clock = clock
        self._memory_version = memory_version
        self._checkpoint = checkpoint
        self._last_write = float("-inf")

    def counters(self) -> Counters:
        q = self.con.execute
        done, failed = q("SELECT COALESCE(SUM(state='done'),0), COALESCE(SUM(state='failed'),0) "
                         "FROM tasks").fetchone()
        bad, fdone, ffail = q("SELECT COALESCE(SUM(n_bad),0), COALESCE(SUM(state='done'),0), "
                              "COALESCE(SUM(state='failed'),0) FROM files").fetchone()
        practice = q("SELECT COALESCE(SUM(attempts),0) FROM practice").fetchone()[0]
        pending, junk = self.ledger.waiting()
        return Counters(done=done, failed=failed + bad, pending=pending, junk=junk, practice=practice,
                        files_done=fdone, files_failed=ffail)

    def refresh(self) -> None:
        """Recompute the status fields (counters, budget, memory version, checkpoint, accuracy)."""
        rows = self.con.execute("SELECT reward FROM scores ORDER BY rowid DESC LIMIT ?",
                                (self.cfg.accuracy_window,)).fetchall()
        self.board.update(
            counters=self.counters(),
            budget=self.windows.usage(self.clock()),
            memory_version=self._memory_version() if self._memory_version else None,
            checkpoint=self._checkpoint() if self._checkpoint else None,
            accuracy=sum(r[0] for r in rows) / len(rows) if rows else None,
            accuracy_n=len(rows),
        )

    def write(self) -> DaemonStatus:
        now = self.clock()
        snap = self.board.snapshot(now)
        write_status(self.run_dir, snap)
        self._last_write = now
        return snap

    def write_if_due(self) -> None:
        if self.clock() - self._last_write >= self.cfg.status_every_s:
            self.write()
