"""`insightloop suites`: the task suites with their sizes, or one suite's size and first task."""

from __future__ import annotations

from typing import Annotated

import typer
from insightloop.apps.cli.errors import user_errors
from insightloop.evals.suites import RG_DEFAULT_SIZE, list_suites, load_suite
from insightloop.evals.suites.jsonl import read_task_lines
from insightloop.evals.suites.rg import dataset_names
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def suites(
    rg: Annotated[bool, typer.Option("--rg", help="list the reasoning-gym datasets (rg/<dataset>)")] = False,
    show: Annotated[str | None, typer.Option(
        "--show", help="load one suite (e.g. jsonl:tasks.jsonl) and print its size and first task")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="with --show: skip, report bad lines")] = False,
) -> None:
    """List the task suites with their sizes."""
    if show:
        show_suite(show, skip_bad)
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


def show_suite(name: str, skip_bad: bool) -> None:
    """`--show`: print the bad JSONL lines (with `skip_bad`), the size and the first task."""
    console = Console()
    with user_errors(ValueError, FileNotFoundError):  # a bad line, an unknown suite, a missing file
        tasks, problems = (read_task_lines(name.removeprefix("jsonl:"), skip_bad) if name.startswith("jsonl:")
                           else (load_suite(name), []))
    for problem in problems:
        console.print(f"[yellow]skipped[/yellow] {escape(str(problem))}")
    console.print(f"[bold]{escape(name)}[/bold]: {len(tasks)} tasks")
    if tasks:
        about = f"verifier {tasks[0].verifier}, answer {tasks[0].answer!r}"
        console.print(f"first: {escape(tasks[0].id)} ({escape(about)})")
        console.print(escape(tasks[0].prompt))
