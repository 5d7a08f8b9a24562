"""Users' own tasks from a JSONL file (`jsonl:PATH`).

One JSON object per line: `{"id": str, "prompt": str, "answer": str, "verifier": V}` with `family`
optional and no other keys; V is one of exact, numeric, math, choice, boolean, game24, countdown.
For game24 and countdown the answer is one solution expression (e.g. `(1 + 1) * (4 + 6)`): the
numbers and the target are read from it, and any other solution is accepted. A prompt without an
`Answer:` instruction gets the standard answer-format line appended. Blank lines are ignored.
Each bad line is reported with the file, the line number and what is wrong.

`check_answer` is the one check of a reference against its verifier (the CLI's ad-hoc task uses it
too). `parse_task_file` is the one parser: per non-blank line, its number, its raw bytes and either
the task or the problem. `read_task_lines` (suites, CLI) and the daemon's inbox are both built on it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from insightloop.core.errors import UserError
from insightloop.core.task import Task
from insightloop.evals.verifiers import (
    TASK_FILE_VERIFIERS,
    ExpressionError,
    answer_instruction,
    boolean_labels,
    eval_arithmetic,
    parse_boolean,
    parse_choice,
    parse_number,
    parse_options,
)
from pydantic import BaseModel

REQUIRED_KEYS = ("id", "prompt", "answer", "verifier")
ALLOWED_KEYS = (*REQUIRED_KEYS, "family")


class LineProblem(BaseModel):
    """One bad line of a task file."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class TaskLine(BaseModel):
    """One non-blank line of a task file: its 1-based number, its bytes as read (without the line
    break; kept as bytes since the line may not be valid UTF-8), and the task it holds or why not."""

    line: int
    raw: bytes
    task: Task | None = None
    problem: LineProblem | None = None


class TaskFileError(UserError, ValueError):
    """A task file has a bad line; the message names the file, the line and the fault."""

    def __init__(self, problem: LineProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


def _check_keys(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object, got {type(obj).__name__}")
    unknown = [k for k in obj if k not in ALLOWED_KEYS]
    if unknown:
        raise ValueError(f"unknown key(s) {', '.join(map(repr, unknown))}; "
                         f"allowed keys: {', '.join(ALLOWED_KEYS)}")
    missing = [k for k in REQUIRED_KEYS if k not in obj]
    if missing:
        raise ValueError(f"missing key(s) {', '.join(map(repr, missing))}; "
                         f"required: {', '.join(REQUIRED_KEYS)}")
    for key, value in obj.items():
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"{key!r} must be a non-empty string, got {json.dumps(value)[:40]}")
    if obj["verifier"] not in TASK_FILE_VERIFIERS:
        raise ValueError(f"unknown verifier {obj['verifier']!r}; allowed: {', '.join(TASK_FILE_VERIFIERS)}")
    return obj


def check_answer(verifier: str, answer: str, prompt: str) -> None:
    """Fail early on a reference the verifier could never match (a ValueError saying why)."""
    try:
        if verifier == "numeric":
            parse_number(answer)
        elif verifier == "choice":
            parse_choice(answer, parse_options(prompt) or None)
        elif verifier == "boolean":
            parse_boolean(answer)
        elif verifier in ("game24", "countdown"):
            value, _ = eval_arithmetic(answer)
            if verifier == "game24" and value != 24:
                raise ValueError(f"the solution evaluates to {value}, not 24")
    except (ValueError, ExpressionError) as exc:
        raise ValueError(f"answer {answer[:60]!r} does not suit verifier {verifier!r}: {exc}") from exc


def _task(obj: dict[str, Any], default_family: str) -> Task:
    verifier, prompt, answer = obj["verifier"], obj["prompt"], obj["answer"]
    check_answer(verifier, answer, prompt)
    if "answer:" not in prompt.lower():
        prompt = f"{prompt}\n\n{answer_instruction(verifier, boolean_labels(answer))}"
    meta = {"options": parse_options(obj["prompt"])} if verifier == "choice" and parse_options(prompt) else {}
    return Task(id=obj["id"], family=obj.get("family", default_family), prompt=prompt, answer=answer,
                verifier=verifier, meta=meta)


def _parse_line(raw: bytes) -> Any:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"invalid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"bad JSON: {exc.msg} (column {exc.colno})") from exc


def parse_task_file(path: Path | str) -> list[TaskLine]:
    """Every non-blank line of a JSONL task file, in order, each with its task or its problem.
    A repeated id is a problem on the later line; only good lines claim an id."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"task file not found: {path}")
    out: list[TaskLine] = []
    first_seen: dict[str, int] = {}
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not raw.strip():
            continue
        raw = raw.rstrip(b"\r")
        try:
            obj = _check_keys(_parse_line(raw))
            if obj["id"] in first_seen:
                raise ValueError(f"duplicate id {obj['id']!r} (first on line {first_seen[obj['id']]})")
            task = _task(obj, f"jsonl:{path.stem}")
        except ValueError as exc:
            out.append(TaskLine(line=number, raw=raw,
                                problem=LineProblem(path=str(path), line=number, message=str(exc))))
            continue
        first_seen[task.id] = number
        out.append(TaskLine(line=number, raw=raw, task=task))
    return out


def read_task_lines(path: Path | str, skip_bad: bool = False) -> tuple[list[Task], list[LineProblem]]:
    """The tasks in a JSONL file and the bad lines. Raises `TaskFileError` on the first bad line
    unless `skip_bad`, in which case bad lines are left out and returned as `LineProblem`s."""
    tasks: list[Task] = []
    problems: list[LineProblem] = []
    for entry in parse_task_file(path):
        if entry.problem is not None:
            if not skip_bad:
                raise TaskFileError(entry.problem)
            problems.append(entry.problem)
        elif entry.task is not None:
            tasks.append(entry.task)
    return tasks, problems
