"""`insightloop fold`: one fold of a run's experience into the weights, with progress and a report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from insightloop.rl.fold import FoldEvent, FoldResult
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


def _progress_handler(progress: Progress) -> Any:
    """Turn fold events into progress bar updates (one bar per training stage)."""
    bars: dict[str, Any] = {}

    def on_event(ev: FoldEvent) -> None:
        if ev.kind == "fold_stage":
            if ev.stage in ("grpo", "sft", "dpo", "warm_start_sft"):
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


def fold_command(run_dir: Path, method: str | None, steps: int | None, lora: bool | None,
                 config: str | None, overrides: list[str], as_json: bool) -> int:
    """Run one fold; print a table (or JSON). Exit code 0 accepted, 1 rejected, 2 unusable input."""
    from insightloop.core.config import ConfigError, load_config
    from insightloop.rl.fold import fold

    console = Console()
    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=as_json) as progress:
            result = fold(run_dir, cfg, method, steps, lora, on_event=_progress_handler(progress))  # type: ignore[arg-type]
    except ValueError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    if as_json:
        print(json.dumps(result.model_dump(mode="json")))
    else:
        console.print(report_table(result))
        console.print(f"checkpoint: {escape(result.checkpoint)}")
    return 0 if result.accepted else 1
