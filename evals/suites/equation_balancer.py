"""Math equation balancer: fill each `?` with an operator so the equation holds.

The answer is the whole equation with operators filled in; it must keep the given numbers in order,
use no parentheses, and evaluate exactly to the target (usual precedence). Any valid filling counts,
not only the reference one.
"""

from __future__ import annotations

import json
from typing import Any

from insightloop.core.task import Task
from insightloop.evals.suites.bundled import data_file
from insightloop.evals.verifiers import answer_instruction

FAMILY = "equation_balancer"


def _rows() -> list[dict[str, Any]]:
    text = data_file("equation_balancer", "equation_balancer_0-124.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def size() -> int:
    return len(_rows())


def prompt(puzzle: str) -> str:
    return (f"Replace each ? with one of + - * / so that the equation is true. Multiplication and "
            f"division come before addition and subtraction; no parentheses.\n{puzzle}\n\n"
            f"{answer_instruction('equation')}")


def load() -> list[Task]:
    """Every puzzle; `meta` holds the ordered `numbers` and the `target` value."""
    tasks = []
    for i, row in enumerate(_rows()):
        puzzle = str(row["input"])
        numbers = [int(n) for n in puzzle.split("=")[0].split("?")]
        tasks.append(Task(id=f"equation_balancer/{i}", family=FAMILY, prompt=prompt(puzzle),
                          answer=str(row["target"]), verifier="equation",
                          meta={"numbers": numbers, "target": int(row["target_value"])}))
    return tasks
