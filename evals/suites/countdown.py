"""Countdown with three numbers: reach the target using each number exactly once with `+ - * /`.

The data gives only numbers and target; a reference solution is found by exhaustive search
(a few hundred expressions per puzzle) so every task carries a checkable `answer`.
"""

from __future__ import annotations

import json
from fractions import Fraction
from itertools import permutations

from insightloop.core.task import Task
from insightloop.evals.suites.bundled import data_file
from insightloop.evals.verifiers import answer_instruction

FAMILY = "countdown"


def _rows() -> list[dict[str, str]]:
    text = data_file("countdown", "countdown_cd3_0-127.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def size() -> int:
    return len(_rows())


def _combine(a: tuple[Fraction, str], b: tuple[Fraction, str]) -> list[tuple[Fraction, str]]:
    (x, ex), (y, ey) = a, b
    out = [(x + y, f"({ex} + {ey})"), (x - y, f"({ex} - {ey})"), (x * y, f"({ex} * {ey})")]
    return out + ([(x / y, f"({ex} / {ey})")] if y != 0 else [])


def _search(items: list[tuple[Fraction, str]], target: Fraction) -> str | None:
    if len(items) == 1:
        return items[0][1] if items[0][0] == target else None
    for i, j in permutations(range(len(items)), 2):
        rest = [item for k, item in enumerate(items) if k not in (i, j)]
        for merged in _combine(items[i], items[j]):
            found = _search([*rest, merged], target)
            if found:
                return found
    return None


def solve(numbers: list[int], target: int) -> str | None:
    """An expression using each number once that equals `target`, or None if there is none."""
    found = _search([(Fraction(n), str(n)) for n in numbers], Fraction(target))
    return found[1:-1] if found and len(numbers) > 1 else found


def prompt(numbers: list[int], target: int) -> str:
    listed = ", ".join(str(n) for n in numbers)
    return (f"Using the numbers {listed}, make {target}. Use each number exactly once with + - * / "
            f"and parentheses.\n\n{answer_instruction('countdown')}")


def load() -> list[Task]:
    """Every puzzle; `meta` holds `numbers` and `target`, `answer` one solution found by search."""
    tasks = []
    for i, row in enumerate(_rows()):
        numbers, target = [int(n) for n in row["input"].split(",")], int(row["output"])
        tasks.append(Task(id=f"countdown/{i}", family=FAMILY, prompt=prompt(numbers, target),
                          answer=solve(numbers, target), verifier="countdown",
                          meta={"numbers": numbers, "target": target}))
    return tasks
