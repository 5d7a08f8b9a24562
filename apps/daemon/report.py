"""The daemon's live status: counters, spend, accuracy, memory, checkpoint and folds, and status.json.

The worker refreshes the `StatusBoard` after every step (that reads the state DB, so only the worker
does it); `write_if_due` only snapshots the board, so the main thread can call it while the worker
is inside an episode. The folds come from the run's checkpoint manifests (`rl.checkpoints`), the
record every fold leaves whether its gate kept it or not.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

from insightloop.apps.daemon.ledger import InboxLedger
from insightloop.apps.daemon.status import Counters, DaemonStatus, FoldRecord, StatusBoard, write_status
from insightloop.apps.daemon.windows import SpendWindows
from insightloop.core.config import DaemonConfig
from insightloop.rl import checkpoints

FOLDS_SHOWN = 10  # status.json lists the most recent folds; `insightloop inspect` → checkpoints has all


def fold_record(m: checkpoints.Manifest) -> FoldRecord:
    """A checkpoint manifest as status.json shows the fold."""
    gate = m.gate or {}
    picked = {k: gate.get(k) for k in ("old_accuracy", "new_accuracy", "n", "rule", "ci_low", "ci_high",
                                       "p_value", "reason")}
    return FoldRecord(index=m.index, status=m.status, method=m.method, steps=m.steps, lora=m.lora,
                      seconds=m.seconds, finished=m.settled, **picked)


def fold_records(run_dir: Path, limit: int = FOLDS_SHOWN) -> tuple[list[FoldRecord], dict[str, int]]:
    """The last `limit` folds of the run (oldest first) and how many folds ended in each status."""
    manifests, totals = [], {}
    for folder in checkpoints.manifest_folders(run_dir):
        try:  # a manifest from an older version, or one edited by hand, must not stop the status
            m = checkpoints.read_manifest(folder)
        except (OSError, ValueError):
            totals["unreadable"] = totals.get("unreadable", 0) + 1
            continue
        manifests.append(m)
        totals[m.status] = totals.get(m.status, 0) + 1
    return [fold_record(m) for m in manifests[-limit:]], totals


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
        """Recompute the status fields (counters, budget, memory version, checkpoint, accuracy, folds)."""
        rows = self.con.execute("SELECT reward FROM scores ORDER BY rowid DESC LIMIT ?",
                                (self.cfg.accuracy_window,)).fetchall()
        folds, totals = fold_records(self.run_dir)
        self.board.update(
            folds=folds,
            fold_totals=totals,
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
