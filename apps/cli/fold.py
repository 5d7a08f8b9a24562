"""`insightloop fold`: one fold of a run's experience into the weights, with progress and a report.

Exit code 0 when the gate accepted the new weights, 1 when it rejected them (rolled back), 2 when
the run directory holds nothing usable (the error boundary prints why).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from insightloop.apps.cli.errors import user_errors
from insightloop.apps.cli.options import AsJson, ConfigFile, Overrides, load, run_dir_option
from insightloop.rl.fold import FoldEvent, FoldResult
from insightloop.rl.fold import fold as run_fold
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

FOLD_METHODS = ("grpo", "sft", "dpo")
TRAINING_STAGES = (*FOLD_METHODS, "warm_start_sft")


def _check_method(value: str | None) -> str | None:
    if value is not None and value not in FOLD_METHODS:
        raise typer.BadParameter("must be grpo, sft or dpo")
    return value


def fold(
    run_dir: Annotated[Path, run_dir_option("run directory: episodes, chains, checkpoints")],
    method: Annotated[str | None, typer.Option(
        "--method", help="grpo, sft or dpo (default: config)", callback=_check_method)] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="optimizer steps")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA or full fine-tuning")] = None,
    config: ConfigFile = None,
    overrides: Overrides = None,
    as_json: AsJson = False,
) -> None:
    """Fold the run's verified attempts and chains into the weights (TRL), gated on held-out accuracy."""
    cfg = load(config, overrides)
    console = Console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with user_errors(ValueError), Progress(*columns, console=console, transient=as_json) as progress:
        result = run_fold(run_dir, cfg, method, steps, lora, on_event=_progress_handler(progress))  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(result.model_dump(mode="json")))
    else:
        console.print(report_table(result))
        console.print(f"checkpoint: {escape(result.checkpoint)}")
    if not result.accepted:
        raise typer.Exit(1)


def _progress_handler(progress: Progress) -> Callable[[FoldEvent], None]:
    """Turn fold events into progress bar updates (one bar per training stage)."""
    bars: dict[str, Any] = {}

    def on_event(ev: FoldEvent) -> None:
        if ev.kind == "fold_stage":
            if ev.stage in TRAINING_STAGES:
                bars[ev.stage] = progress.add_task(f"{ev.stage} steps", total=ev.total or None)
            else:
                progress.console.log(f"{escape(ev.stage)} …")
        elif ev.kind == "fold_step" and ev.stage in bars:
            loss = ev.metrics.get("loss")
            desc = f"{ev.stage} steps" + (f" (loss {loss:.3f})" if loss is not None else "")
            progress.update(bars[ev.stage], completed=ev.step, description=desc)

    return on_event


def report_table(result: FoldResult) -> Table:
    """Before/after accuracy on the held-out slice, the verdict, and what the fold trained on."""
    g = result.gate
    table = Table(title=f"fold {result.index} ({result.method}, {result.steps} steps"
                        f"{', LoRA' if result.lora else ''})")
    table.add_column("")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    table.add_row(f"held-out accuracy (n={g.n})", f"{g.old_accuracy:.3f}", f"{g.new_accuracy:.3f}")
    verdict = "[green]accepted[/green]" if result.accepted else "[red]rejected (rolled back)[/red]"
    table.add_row("gate", f"margin {g.margin:.3f}", verdict)
    table.add_row("data", "", escape(", ".join(f"{k}={v}" for k, v in result.data_counts.items())))
    for key in ("mean_loss", "mean_reward", "offpolicy_joined"):
        if key in result.metrics:
            table.add_row(key, "", f"{result.metrics[key]:.3f}")
    table.add_row("seconds", "", f"{result.seconds:.1f}")
    return table
