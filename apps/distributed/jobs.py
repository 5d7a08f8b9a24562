"""What the driver hands out: a `Job` is an `EpisodeOrder` on one worker slot, for an inbox task or
a practice problem. Every order carries its share of what is left in the spend windows (the episodes
running at once share the caps, so together they stay within them, to rounding) and the checkpoint
the run serves now (the gate moved CURRENT there), which the worker loads before the episode.
"""

from __future__ import annotations

from pathlib import Path

from insightloop.apps.daemon.ledger import TaskRef
from insightloop.apps.distributed.worker import EpisodeOrder
from insightloop.core.budget import Budget
from insightloop.core.task import Task
from insightloop.rl import checkpoints
from pydantic import BaseModel


class Job(BaseModel):
    """An order on a worker: an inbox task (`ref`) or a practice problem (`practice`, its key)."""

    slot: int
    order: EpisodeOrder
    ref: TaskRef | None = None
    practice: str | None = None

    @property
    def label(self) -> str:
        return self.ref.label if self.ref is not None else f"practice {self.practice}"


def share(budget: Budget, parts: int) -> Budget:
    """One of `parts` equal shares of the caps in `budget` (at least 1 of a count that is not zero)."""

    def part(cap: int | None) -> int | None:
        return None if cap is None else (max(1, cap // parts) if cap > 0 else 0)

    def fraction(cap: float | None) -> float | None:
        return None if cap is None else cap / parts

    return Budget(max_rollouts=part(budget.max_rollouts), max_tokens=part(budget.max_tokens),
                  max_usd=fraction(budget.max_usd), max_seconds=fraction(budget.max_seconds))


def make_order(key: str, task: Task, left: Budget, parts: int, run_dir: Path, *, train: bool = False,
               respond: bool = False, learn: bool = True) -> EpisodeOrder:
    """An order with its share of `left` (what the windows allow now) and the run's current checkpoint."""
    folder = checkpoints.current(run_dir)
    return EpisodeOrder(key=key, task=task, train=train, respond=respond, learn=learn, budget=share(left, parts),
                        checkpoint=str(folder) if folder is not None else None)


def trains(order: EpisodeOrder) -> bool:
    """Whether the order's episode learns (it counts towards the next fold)."""
    return order.train or (order.respond and order.learn and order.task.answer is not None)


def current_name(run_dir: Path) -> str | None:
    """The name of the checkpoint the run serves (None: the base weights), for status.json."""
    folder = checkpoints.current(run_dir)
    return folder.name if folder is not None else None
