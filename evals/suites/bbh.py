"""BIG-Bench Hard: the 20 bundled tasks (first 125 examples of each).

Multiple-choice tasks are checked on the option letter, yes/no, true/false and valid/invalid tasks
by polarity, the two counting/arithmetic tasks numerically, the rest by normalized exact match.
The data carries BIG-bench's canary string: never publish weights or text trained on it.
"""

from __future__ import annotations

import json
import re

from insightloop.core.task import Task
from insightloop.evals.suites.bundled import data_file
from insightloop.evals.verifiers import BOOLEAN_WORDS, answer_instruction, boolean_labels, parse_options

NUMERIC_TASKS = frozenset({"multistep_arithmetic_two", "object_counting"})
_LETTER = re.compile(r"^\([A-Z]\)$")


def task_names() -> list[str]:
    """The bundled BBH task names, sorted."""
    folder = data_file("bbh", "tasks")
    return sorted(f.name.removesuffix(".json") for f in folder.iterdir() if f.name.endswith(".json"))


def _examples(task: str) -> list[dict[str, str]]:
    if task not in task_names():
        raise ValueError(f"unknown BBH task {task!r}; bundled: {', '.join(task_names())}")
    return json.loads(data_file("bbh", "tasks", f"{task}.json").read_text(encoding="utf-8"))["examples"]


def size(task: str) -> int:
    return len(_examples(task))


def fewshot_block(task: str) -> str:
    """The task's 3-shot chain-of-thought prompt, without its canary header."""
    text = data_file("bbh", "cot-prompts", f"{task}.txt").read_text(encoding="utf-8")
    return text.split("-----\n", 1)[-1].strip()


def verifier_for(task: str, target: str) -> str:
    """How one example is checked (decided per example: one `ruin_names` target is not a letter)."""
    if _LETTER.match(target):
        return "choice"
    if target.strip().lower() in BOOLEAN_WORDS:
        return "boolean"
    return "numeric" if task in NUMERIC_TASKS else "exact"


def _prompt(task: str, question: str, verifier: str, target: str, fewshot: bool) -> str:
    instruction = answer_instruction(verifier, boolean_labels(target))
    if fewshot:
        return f"{fewshot_block(task)}\n\nQ: {question}\n{instruction}"
    return f"{question}\n\n{instruction}"


def load(task: str, fewshot: bool = False) -> list[Task]:
    """All bundled examples of one BBH task as `Task`s with family `bbh/<task>`."""
    tasks = []
    for i, example in enumerate(_examples(task)):
        target, question = example["target"], example["input"]
        verifier = verifier_for(task, target)
        meta = {"options": parse_options(question)} if verifier == "choice" else {}
        tasks.append(Task(id=f"bbh/{task}/{i}", family=f"bbh/{task}", answer=target, verifier=verifier,
                          prompt=_prompt(task, question, verifier, target, fewshot), meta=meta))
    return tasks
