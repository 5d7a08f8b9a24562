"""`insightloop suites`: the task suites with their sizes, or one suite's size and first task.

`--show` loads a suite as `solve` would: bad lines and prompts the policy's context cannot hold
(`--config`/`--set` name the policy) are errors, or with `--skip-bad` are listed and left out. The
first task's prompt is shown cut to `SHOWN_PROMPT_CHARS`, with its length.
"""

from __future__ import annotations

from typing import Annotated

import typer
from insightloop.agent.backends.context import PromptLimit
from insightloop.apps.cli.errors import user_errors
from insightloop.apps.cli.options import ConfigFile, Overrides, load
from insightloop.apps.runtime import Runtime
from insightloop.core.task import Task
from insightloop.evals.suites import RG_DEFAULT_SIZE, list_suites, load_suite
from insightloop.evals.suites.jsonl import read_task_lines
from insightloop.evals.suites.rg import dataset_names
from rich.console import Console
from rich.markup import escape
from rich.table import Table

SHOWN_PROMPT_CHARS = 2000  # a 10 MB prompt would take minutes to print, and no one reads it
SHOWN_ANSWER_CHARS = 80


def suites(
    rg: Annotated[bool, typer.Option("--rg", help="list the reasoning-gym datasets (rg/<dataset>)")] = False,
    show: Annotated[str | None, typer.Option(
        "--show", help="load one suite (e.g. jsonl:tasks.jsonl) and print its size and first task")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="with --show: skip, report bad lines")] = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """List the task suites with their sizes."""
    cfg = load(config, overrides)  # with --show, the policy whose context the prompts must fit
    if show:
        show_suite(show, skip_bad, Runtime(cfg).prompt_limit)
    else:
        Console().print(suites_table(rg))


def suites_table(rg: bool) -> Table:
    """The bundled suites (or, with `rg`, every reasoning-gym dataset) with their sizes."""
    notes = {"rg/<dataset>": f"any reasoning-gym dataset, size default {RG_DEFAULT_SIZE} (--rg lists them)",
             "jsonl:PATH": "your own tasks, one JSON object per line"}
    rows = [(f"rg/{name}", None) for name in dataset_names()] if rg else list_suites()
    table = Table(title="reasoning-gym datasets" if rg else "task suites")
    table.add_column("suite", no_wrap=True)
    table.add_column("tasks", justify="right")
    table.add_column("notes")
    for name, size in rows:
        table.add_row(escape(name), "-" if size is None else str(size), notes.get(name, ""))
    return table


def show_suite(name: str, skip_bad: bool, limit: PromptLimit) -> None:
    """`--show`: print the bad lines and prompts too long (with `skip_bad`), the size and the first task."""
    console = Console()
    with user_errors(ValueError, OSError):  # a bad line, an unknown suite, a missing file
        tasks, problems = (read_task_lines(name.removeprefix("jsonl:"), skip_bad) if name.startswith("jsonl:")
                           else (load_suite(name), []))
    skipped = [str(p) for p in problems]
    if skip_bad:
        fits = [(t, limit.problem(t)) for t in tasks]
        tasks = [t for t, problem in fits if problem is None]
        skipped += [problem for _, problem in fits if problem is not None]
    else:
        limit.check(tasks)
    for problem in skipped:
        console.print(f"[yellow]skipped[/yellow] {escape(problem)}")
    console.print(f"[bold]{escape(name)}[/bold]: {len(tasks)} tasks")
    if tasks:
        show_task(console, tasks[0])


def show_task(console: Console, task: Task) -> None:
    """One task: id, verifier, answer and prompt, the long ones cut with their length said."""
    answer = _cut(repr(task.answer), SHOWN_ANSWER_CHARS)
    about = f"verifier {task.verifier}, answer {answer}, prompt {len(task.prompt):,} characters"
    console.print(f"first: {escape(task.id)} ({escape(about)})")
    shown = _cut(task.prompt, SHOWN_PROMPT_CHARS)
    console.print(escape(shown))
    if len(shown) < len(task.prompt):
        console.print(f"[dim](prompt cut: {SHOWN_PROMPT_CHARS:,} of {len(task.prompt):,} characters shown)[/dim]")


def _cut(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"
