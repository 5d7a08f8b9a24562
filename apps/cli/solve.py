"""Console side of `insightloop solve`: load tasks and the policy, show progress, print the report.

The solving itself is `agent.solve.solve_many`; this module only wires it to rich (progress bar,
table) or to one JSON object on stdout, and saves episodes into a run directory as they finish.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from insightloop.agent.search.solve import (
    EpisodeFinished,
    SolveEvent,
    SolveSummary,
    save_episode,
    solve_many,
    summarize,
)
from insightloop.core.config import Config
from insightloop.core.task import Task
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class UsageError(ValueError):
    """A bad command-line request; the CLI prints it on one line and exits with status 2."""


def adhoc_task(prompt: str, verifier: str, answer: str | None) -> Task:
    """A one-off task from the command line, checked by the named verifier."""
    from insightloop.evals.verifiers import answer_instruction, get_verifier

    try:
        get_verifier(verifier)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    text = prompt.strip()
    if "Answer:" not in text:  # ask for the answer line the verifier reads
        text += "\n\n" + answer_instruction(verifier)
    return Task(id="adhoc", family="adhoc", prompt=text, answer=answer, verifier=verifier)


def suite_tasks(suite: str, limit: int | None, seed: int) -> list[Task]:
    from insightloop.evals.suites import load_suite

    try:
        tasks = load_suite(suite, limit=limit, seed=seed)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise UsageError(f"cannot load suite {suite!r}: {exc}") from None
    if not tasks:
        raise UsageError(f"suite {suite!r} has no tasks")
    return tasks


def run(cfg: Config, tasks: list[Task], run_dir: Path | None, as_json: bool) -> SolveSummary:
    """Solve `tasks` with the configured policy; print a progress bar and the table (or JSON)."""
    from insightloop.agent.backends import make_lm

    err = Console(stderr=True)
    out = err if as_json else Console()
    with err.status("loading the policy model..."):
        lm = make_lm(cfg.policy)
    progress = Progress(TextColumn("solving"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[acc]}"), TimeElapsedColumn(), console=out)
    bar = progress.add_task("solve", total=len(tasks), acc="")
    hits = [0, 0]

    def on_event(event: SolveEvent) -> None:
        if not isinstance(event, EpisodeFinished):
            return
        if run_dir is not None and event.episode is not None:
            save_episode(run_dir, event.episode)
        if event.correct is not None:
            hits[0] += event.correct
            hits[1] += 1
        progress.update(bar, advance=1, acc=f"correct {hits[0]}/{hits[1]}" if hits[1] else "")

    start = time.monotonic()
    with progress:
        episodes = solve_many(tasks, lm, cfg.search, on_event=on_event, max_active=cfg.search.parallel_tasks)
    summary = summarize(episodes, cfg.search.strategy, seconds=time.monotonic() - start)
    if as_json:
        print(json.dumps(summary.model_dump(mode="json")))
    else:
        out.print(report_table(summary))
    return summary


def _fmt(x: float | None, pct: bool = False) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}%" if pct else f"{x:.1f}"


def report_table(s: SolveSummary) -> Table:
    """Per-task rows; the footer holds accuracy and the per-task means of rollouts, tokens, seconds."""
    table = Table(title=f"solve ({s.strategy}): {s.tasks} tasks", show_footer=True,
                  caption=f"accuracy {_fmt(s.accuracy, pct=True)} (vote {_fmt(s.vote_accuracy, pct=True)}); "
                          f"footer: per-task means; wall {s.seconds:.1f}s")
    table.add_column("task", footer="mean", overflow="fold", min_width=12)
    table.add_column("answer", footer="")
    table.add_column("ref", footer="")
    table.add_column("ok", justify="center", footer=f"{s.correct}/{s.labeled}")
    table.add_column("rollouts", justify="right", footer=_fmt(s.rollouts_per_task))
    table.add_column("tokens", justify="right", footer=f"{s.tokens_per_task:.0f}")
    table.add_column("sec", justify="right", footer=f"{s.seconds_per_task:.1f}")
    for r in s.rows:
        ok = "-" if r.correct is None else ("yes" if r.correct else "no")
        table.add_row(r.task_id, _short(r.answer), _short(r.reference), ok, str(r.rollouts), str(r.tokens),
                      f"{r.seconds:.1f}")
    return table


def _short(text: str | None, width: int = 12) -> str:
    if text is None:
        return "-"
    one = " ".join(text.split())
    return one if len(one) <= width else one[: width - 1] + "…"


def solve_command(suite: str | None, limit: int | None, strategy: str | None, budget: int | None,
                  run_dir: Path | None, as_json: bool, config: str | None, overrides: list[str],
                  prompt: str | None, verifier: str, answer: str | None) -> int:
    """The body of `insightloop solve`; returns the exit status (2 on a usage or config error)."""
    from insightloop.core.config import ConfigError, load_config

    sets = list(overrides)
    if strategy is not None:
        sets.append(f"search.strategy={strategy}")
    if budget is not None:
        sets.append(f"search.rollouts={budget}")
    try:
        cfg = load_config(config, sets)
        if (suite is None) == (prompt is None):
            raise UsageError("give exactly one of --suite SUITE or --prompt TEXT")
        tasks = suite_tasks(suite, limit, cfg.seed) if suite else [adhoc_task(prompt or "", verifier, answer)]
    except (ConfigError, UsageError) as exc:
        Console(stderr=True, soft_wrap=True).print(f"error: {exc}", markup=False, highlight=False)
        return 2
    run(cfg, tasks, run_dir, as_json)
    return 0
