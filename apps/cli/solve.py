"""`insightloop solve`: load tasks and the policy (through the runtime factory), show progress, print the report.

The solving itself is `agent.search.solve.solve_many`; this module only wires it to rich (progress
bar, table) or to one JSON object on stdout, and stores episodes in a run directory's memory as they finish.
Everything that can be checked before the model loads is: the config, the tasks (an ad-hoc answer
as a task file's would be), every prompt against the model's context, and the run's memory. A run
whose every backend call failed is a failed run (`failed_run`, exit code 1), not an accuracy of zero.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer
from insightloop.agent.search.solve import solve_many
from insightloop.agent.search.summary import SolveSummary, summarize
from insightloop.apps.cli.errors import CommandError
from insightloop.apps.cli.failed_run import RunFailed, run_failure
from insightloop.apps.cli.options import AsJson, ConfigFile, Overrides, load, run_dir_option
from insightloop.apps.runtime import Runtime
from insightloop.core.config import Config
from insightloop.core.episode import Episode
from insightloop.core.events import EpisodeFinished
from insightloop.core.events import Event as SolveEvent
from insightloop.core.lm import LM
from insightloop.core.task import Task
from insightloop.evals.suites import load_suite
from insightloop.evals.suites.jsonl import check_answer
from insightloop.evals.verifiers import TASK_FILE_VERIFIERS as JSONL_VERIFIERS
from insightloop.evals.verifiers import answer_instruction
from insightloop.memory.episodes import open_episodes
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def solve(
    suite: Annotated[str | None, typer.Option(
        "--suite", help="bundled suite to solve, e.g. bbh/boolean_expressions")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="solve at most N tasks")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="mcts or sample")] = None,
    budget: Annotated[int | None, typer.Option("--budget", min=1, help="rollouts per task")] = None,
    run_dir: Annotated[Path | None, run_dir_option("save episodes there")] = None,
    as_json: AsJson = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="solve one ad-hoc problem instead")] = None,
    verifier: Annotated[str, typer.Option(
        "--verifier", help="verifier for --prompt: any a JSONL task file allows")] = "exact",
    answer: Annotated[str | None, typer.Option("--answer", help="reference answer for --prompt")] = None,
) -> None:
    """Solve tasks with MCTS (or sampling) and report accuracy, rollouts, tokens and seconds per task."""
    cfg = load(config, [*(overrides or []), *_shortcuts(strategy, budget)])
    if (suite is None) == (prompt is None):
        raise CommandError("give exactly one of --suite SUITE or --prompt TEXT")
    tasks = suite_tasks(suite, limit, cfg.seed) if suite else [adhoc_task(prompt or "", verifier, answer)]
    run(cfg, tasks, run_dir, as_json)


def _shortcuts(strategy: str | None, budget: int | None) -> list[str]:
    """`--strategy` and `--budget` as settings; they come after `--set`, so they win."""
    sets = []
    if strategy is not None:
        sets.append(f"search.strategy={strategy}")
    if budget is not None:
        sets.append(f"search.rollouts={budget}")
    return sets


def adhoc_task(prompt: str, verifier: str, answer: str | None) -> Task:
    """A one-off task from the command line, checked as a task file's line would be: a verifier a
    task file could name, a prompt, and a reference answer that verifier could ever match."""
    if verifier not in JSONL_VERIFIERS:
        raise CommandError(f"unknown verifier {verifier!r}; allowed: {', '.join(JSONL_VERIFIERS)}")
    text = prompt.strip()
    if not text:
        raise CommandError("--prompt is empty; give the problem's text")
    if answer is not None:
        if not answer.strip():
            raise CommandError("--answer is empty; give the reference answer, or leave --answer out")
        try:
            check_answer(verifier, answer, text)
        except ValueError as exc:
            raise CommandError(f"--answer: {exc}") from None
    if "Answer:" not in text:  # ask for the answer line the verifier reads
        text += "\n\n" + answer_instruction(verifier)
    return Task(id="adhoc", family="adhoc", prompt=text, answer=answer, verifier=verifier)


def suite_tasks(suite: str, limit: int | None, seed: int) -> list[Task]:
    """The suite's tasks (at most `limit`, drawn with `seed`); an unusable suite is the user's error."""
    try:
        tasks = load_suite(suite, limit=limit, seed=seed)
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise CommandError(f"cannot load suite {suite!r}: {exc}") from None
    if not tasks:
        raise CommandError(f"suite {suite!r} has no tasks")
    return tasks


def run(cfg: Config, tasks: list[Task], run_dir: Path | None, as_json: bool) -> SolveSummary:
    """Solve `tasks` with the configured policy; print a progress bar and the table (or JSON).

    The prompts and the run's memory are checked before the policy loads; a run whose every backend
    call failed raises `RunFailed` after its report.
    """
    err = Console(stderr=True)
    out = err if as_json else Console()
    runtime = Runtime(cfg)
    runtime.prompt_limit.check(tasks)  # a prompt the context cannot hold, before any model work
    with ExitStack() as store:  # the run's memory, opened first: a damaged one is refused at once
        save = store.enter_context(open_episodes(run_dir)).add if run_dir is not None else None
        with err.status("loading the policy model..."):
            lm = runtime.policy
        summary = _solve(cfg, tasks, lm, save, out)
    failure = run_failure(lm, cfg.policy)
    if as_json:
        print(json.dumps({**summary.model_dump(mode="json"), "error": failure}))
    else:
        out.print(report_table(summary))
        if failure is not None:
            out.print(f"[bold red]run failed[/]: {escape(failure)}")
    if failure is not None:
        raise RunFailed(failure)
    return summary


def _solve(cfg: Config, tasks: list[Task], lm: LM, save: Callable[[Episode], object] | None,
           out: Console) -> SolveSummary:
    """Solve with a progress bar; `save` stores each finished episode."""
    progress = Progress(TextColumn("solving"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[acc]}"), TimeElapsedColumn(), console=out)
    bar = progress.add_task("solve", total=len(tasks), acc="")
    hits = [0, 0]

    def on_event(event: SolveEvent) -> None:
        if not isinstance(event, EpisodeFinished):
            return
        if save is not None and event.episode is not None:
            save(event.episode)
        if event.correct is not None:
            hits[0] += event.correct
            hits[1] += 1
        progress.update(bar, advance=1, acc=f"correct {hits[0]}/{hits[1]}" if hits[1] else "")

    start = time.monotonic()
    with progress:
        episodes = solve_many(tasks, lm, cfg.search, on_event=on_event, max_active=cfg.search.parallel_tasks)
    return summarize(episodes, cfg.search.strategy, seconds=time.monotonic() - start)


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
