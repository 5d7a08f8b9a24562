"""The driver's view of its workers: one `WorkerStatus` per slot, as status.json's `workers` shows it.

Per slot: the worker's current name (`w2`, then `w2.2` once replaced), where it runs, what it runs,
the episodes it finished, its failed episodes in a row, and how often and why the slot's worker was
replaced. The coordinator decides; the roster keeps the record.
"""

from __future__ import annotations

from typing import Any

from insightloop.apps.daemon.status import WorkerStatus


class Roster:
    """The status of each worker slot (see the module docstring)."""

    def __init__(self, names: list[str], fail_after: int) -> None:
        self.workers = [WorkerStatus(name=name) for name in names]
        self.fail_after = fail_after

    def __getitem__(self, slot: int) -> WorkerStatus:
        return self.workers[slot]

    def started(self, slot: int, label: str) -> None:
        """The slot's worker was handed the job `label`."""
        self.workers[slot].current_task = label

    def answered(self, slot: int) -> None:
        """The slot's worker handed back a reply (whatever its outcome)."""
        worker = self.workers[slot]
        worker.current_task, worker.episodes = None, worker.episodes + 1

    def succeeded(self, slot: int) -> None:
        self.workers[slot].failures = 0

    def failed(self, slot: int) -> bool:
        """Count a failed episode; True once the worker has failed `fail_after` in a row."""
        worker = self.workers[slot]
        worker.failures += 1
        return worker.failures >= self.fail_after

    def replaced(self, slot: int, name: str, why: str) -> None:
        """A fresh worker named `name` took the slot, for the reason `why`."""
        worker = self.workers[slot]
        worker.name, worker.replaced, worker.note = name, worker.replaced + 1, why
        worker.failures, worker.state, worker.current_task = 0, "starting", None
        worker.pid = worker.node = None

    def seen(self, slot: int, info: Any, busy: bool) -> None:
        """What the worker said about itself (None until its models loaded), and whether it has a job."""
        worker = self.workers[slot]
        if info is not None:
            worker.pid, worker.node = info.pid, info.node
        worker.state = ("working" if busy else "idle") if info is not None else "starting"

    def stopped(self) -> None:
        for worker in self.workers:
            worker.state, worker.current_task = "stopped", None

    def snapshot(self) -> list[WorkerStatus]:
        """Copies, for the status board (which the status writer reads on its own)."""
        return [w.model_copy() for w in self.workers]
