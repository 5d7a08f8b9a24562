"""GSM8K (the train split, 7473 grade-school word problems), checked with math-verify on the `####` answer."""

from __future__ import annotations

import json

from insightloop.core.task import Task
from insightloop.evals.suites.bundled import data_file
from insightloop.evals.verifiers import answer_instruction

FAMILY = "gsm8k"


def _lines() -> list[str]:
    text = data_file("gsm8k", "train.jsonl").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def size() -> int:
    return len(_lines())


def final_answer(solution: str) -> str:
    """The number after `####` in a GSM8K solution, without thousands separators."""
    return solution.rsplit("####", 1)[-1].strip().replace(",", "")


def load() -> list[Task]:
    """Every problem; `meta["solution"]` keeps the worked solution."""
    tasks = []
    for i, line in enumerate(_lines()):
        row = json.loads(line)
        tasks.append(Task(id=f"gsm8k/{i}", family=FAMILY, verifier="math",
                          prompt=f"{row['question']}\n\n{answer_instruction('numeric')}",
                          answer=final_answer(row["answer"]), meta={"solution": row["answer"]}))
    return tasks
