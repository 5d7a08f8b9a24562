"""Game of 24 (puzzles ranked 1-900 by human solve time): reach 24 from four numbers.

The data has no answers; the verifier checks any expression (each number once, `+ - * /`, exact
fractions), so `Task.answer` is None.
"""

from __future__ import annotations

import csv
import io

from insightloop.core.task import Task
from insightloop.evals.suites.bundled import data_file
from insightloop.evals.verifiers import answer_instruction

FAMILY = "game24"
TARGET = 24


def _rows() -> list[dict[str, str]]:
    text = data_file("game24", "24_rank1-900.csv").read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def size() -> int:
    return len(_rows())


def prompt(numbers: list[int]) -> str:
    listed = " ".join(str(n) for n in numbers)
    return (f"Use the numbers {listed} and the operations + - * / to make {TARGET}. "
            f"Use each number exactly once; parentheses are allowed.\n\n{answer_instruction('game24')}")


def load() -> list[Task]:
    """Every puzzle, easiest first; `meta` holds `numbers`, `target` and the human `rank`."""
    tasks = []
    for row in _rows():
        numbers = [int(n) for n in row["Puzzles"].split()]
        rank = int(row["Rank"])
        tasks.append(Task(id=f"game24/{rank}", family=FAMILY, prompt=prompt(numbers), verifier="game24",
                          meta={"numbers": numbers, "target": TARGET, "rank": rank}))
    return tasks
