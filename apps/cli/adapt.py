"""`insightloop adapt` and `insightloop demo`: progress lines and the result table.

`demo` is `adapt` on a fixed suite, split and budget with small search settings, so `make demo`
finishes in minutes on 2 CPU cores. Progress goes to stderr, so `--json` leaves exactly one JSON
object on stdout.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from insightloop.apps.adapt import AdaptResult
from insightloop.apps.adapt import adapt as measure
from insightloop.apps.cli.errors import user_errors
from insightloop.apps.cli.failed_run import RunFailed, run_failure
from insightloop.apps.cli.options import AsJson, ConfigFile, Overrides, load, run_dir_option
from insightloop.apps.runtime import Runtime
from insightloop.core import events as ev
from insightloop.core.config import Config
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


def adapt(
    suite: Annotated[str, typer.Option("--suite", help="suite to adapt to, e.g. bbh/boolean_expressions")],
    n_train: Annotated[int, typer.Option("--train", min=1, help="training problems")] = 5,
    n_test: Annotated[int, typer.Option(
        "--test", min=1, help="held-out test problems (at most the rest of the suite)")] = 120,
    budget: Annotated[int, typer.Option("--budget", min=1, help="rollouts for learning")] = 60,
    run_dir: Annotated[Path | None, run_dir_option("keep the memory there")] = None,
    as_json: AsJson = False,
    seed: Annotated[int, typer.Option("--seed", help="split and sampling seed")] = 0,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Few-shot adaptation: baseline vs accuracy after learning insights on a few training problems."""
    run_adapt(load(config, overrides), suite=suite, n_train=n_train, n_test=n_test, budget=budget,
              run_dir=run_dir, seed=seed, as_json=as_json)


def demo(config: ConfigFile = None, overrides: Overrides = None, as_json: AsJson = False) -> None:
    """The main job on the embedded models: adapt on a default suite and budget (minutes on 2 CPU cores)."""
    cfg = load(config, overrides, first=DEMO_OVERRIDES)
    run_adapt(cfg, suite=DEMO_SUITE, n_train=DEMO_TRAIN, n_test=DEMO_TEST, budget=DEMO_BUDGET, run_dir=None,
              seed=0, as_json=as_json)


def run_adapt(cfg: Config, *, suite: str, n_train: int, n_test: int, budget: int, run_dir: Path | None,
              seed: int, as_json: bool) -> None:
    """Measure, learn, re-measure; print the table (or one JSON object on stdout)."""
    err = Console(stderr=True)
    err.print(f"[bold]adapt[/] {escape(suite)}: baseline on {n_test} test problems, then learning on "
              f"{n_train} within {budget} rollouts, then the adapted measurement")
    with Runtime(cfg) as runtime, user_errors(ValueError):  # an unknown suite or a split too small
        res = measure(suite, n_train, n_test, budget, cfg, run_dir=run_dir, seed=seed, on_event=progress(err),
                      runtime=runtime)
        failure = run_failure(runtime.policy, cfg.policy)
    if as_json:
        print(json.dumps({**res.summary(), "error": failure}))
    else:
        out = Console()
        out.print(result_table(res))
        for text in res.insights:
            out.print(f"  - {escape(text)}")
        if failure is not None:
            out.print(f"[bold red]run failed[/]: {escape(failure)}")
    if failure is not None:  # every backend call failed: the accuracies above measured nothing
        raise RunFailed(failure)


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
            ("McNemar p (paired, exact)", f"{res.mcnemar_p:.3g} on {res.n_test} test problems"),
            ("rollouts used (learning)", f"{res.rollouts} / {res.budget}"),
            ("prompt tokens per test problem", f"{res.prompt_tokens_per_problem:.0f} "
                                               f"(baseline {res.baseline_prompt_tokens_per_problem:.0f})"),
            ("insights admitted / rejected", f"{res.insights_admitted} / {res.insights_rejected}"),
            ("evaluation", res.eval_strategy),
            ("wall time", f"{res.seconds:.0f} s")]
    for name, value in rows:
        t.add_row(name, value)
    return t
