"""Console side of `insightloop adapt` and `insightloop demo`: progress lines and the result table.

Progress goes to stderr, so `--json` leaves exactly one JSON object on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path

from insightloop.apps.adapt import AdaptResult, adapt
from insightloop.core import events as ev
from insightloop.core.config import ConfigError, load_config
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DEMO_SUITE = "bbh/boolean_expressions"  # where a written insight measurably moves SmolLM2 (DESIGN.md)
DEMO_TRAIN = 5
DEMO_TEST = 32
DEMO_BUDGET = 40
DEMO_OVERRIDES = ["search.strategy=mcts", "search.width=2", "search.max_depth=3", "search.step_tokens=48",
                  "search.rollouts=4", "search.answer_tokens=128", "loop.pairs=3",
                  "loop.max_candidates=3", "loop.baseline_samples=1", "loop.analyst_tokens=96"]


def progress(console: Console) -> ev.EventSink:
    """A sink that prints one short line per notable event."""

    def sink(e: ev.Event) -> None:
        if isinstance(e, ev.EpisodeFinished) and e.train:
            mark = "[green]solved[/]" if e.correct else "[red]failed[/]"
            console.print(f"  episode {escape(e.task_id)}: {mark}, {e.rollouts} rollouts")
        elif isinstance(e, ev.InsightAdmitted):
            console.print(f"  [bold green]admitted[/] {escape(e.text)}")
        elif isinstance(e, ev.InsightRejected):
            console.print(f"  [dim]rejected ({escape(e.reason)}): {escape(e.text)}[/]")
        elif isinstance(e, ev.BudgetUpdate) and e.max_rollouts:
            console.print(f"  [dim]budget {e.rollouts}/{e.max_rollouts} rollouts[/]")

    return sink


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def result_table(res: AdaptResult) -> Table:
    """The measurement as a rich table."""
    lo, hi = res.lift_ci
    t = Table(title=f"adapt {res.suite}: {res.n_train} train, {res.n_test} test, budget {res.budget}, "
                    f"seed {res.seed}")
    t.add_column("measure")
    t.add_column("value", justify="right")
    rows = [("baseline accuracy (no memory)", _pct(res.baseline_accuracy)),
            ("adapted accuracy (frozen memory)", _pct(res.adapted_accuracy)),
            ("lift (points, 95% paired CI)", f"{100 * res.lift:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"),
            ("rollouts used (learning)", f"{res.rollouts} / {res.budget}"),
            ("prompt tokens per test problem", f"{res.prompt_tokens_per_problem:.0f} "
                                               f"(baseline {res.baseline_prompt_tokens_per_problem:.0f})"),
            ("insights admitted / rejected", f"{res.insights_admitted} / {res.insights_rejected}"),
            ("evaluation", res.eval_strategy),
            ("wall time", f"{res.seconds:.0f} s")]
    for name, value in rows:
        t.add_row(name, value)
    return t


def adapt_command(suite: str, n_train: int, n_test: int, budget: int, run_dir: Path | None, as_json: bool,
                  seed: int, config: str | None, overrides: list[str]) -> int:
    """Run `adapt` and print the table (or one JSON object); returns the exit code."""
    out, err = Console(), Console(stderr=True)
    try:
        cfg = load_config(config, overrides)
    except ConfigError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        return 2
    err.print(f"[bold]adapt[/] {escape(suite)}: baseline on {n_test} test problems, then learning on "
              f"{n_train} within {budget} rollouts, then the adapted measurement")
    try:
        res = adapt(suite, n_train, n_test, budget, cfg, run_dir, seed, progress(err))
    except ValueError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        return 2
    if as_json:
        print(json.dumps(res.summary()))
        return 0
    out.print(result_table(res))
    for text in res.insights:
        out.print(f"  - {escape(text)}")
    return 0


def demo_command() -> int:
    """`make demo`: adapt on the default suite and budget with the embedded models (minutes on 2 CPU cores)."""
    return adapt_command(DEMO_SUITE, DEMO_TRAIN, DEMO_TEST, DEMO_BUDGET, None, False, 0, None, DEMO_OVERRIDES)
