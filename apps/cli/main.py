"""The `insightloop` command line (typer). Heavy imports happen inside commands, so `--help` is fast."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="insightloop: a self-improving agent with insight memory.")

from insightloop.apps.cli.insights import insights_app  # noqa: E402  (only typer at import time: --help stays fast)

app.add_typer(insights_app, name="insights")


@app.command()
def inspect(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="the run directory to open (read-only)")],
    command: Annotated[list[str] | None, typer.Option(
        "--command", "-c", help="run this console command and exit (repeatable)")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML config (for the embedder)")] = None,
) -> None:
    """Open the interactive console: what was learned, why, and whether it helps."""
    from insightloop.apps.console.inspector import inspect_main

    raise typer.Exit(inspect_main(run_dir, command or [], config))


@app.command()
def solve(
    suite: Annotated[str | None, typer.Option(
        "--suite", help="bundled suite to solve, e.g. bbh/boolean_expressions")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="solve at most N tasks")] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", help="mcts or sample")] = None,
    budget: Annotated[int | None, typer.Option("--budget", min=1, help="rollouts per task")] = None,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="save episodes there")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object, not a table")] = False,
    config: Annotated[str | None, typer.Option("--config", help="YAML config file")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override config: key=value")] = None,
    prompt: Annotated[str | None, typer.Option("--prompt", help="solve one ad-hoc problem instead")] = None,
    verifier: Annotated[str, typer.Option("--verifier", help="verifier for --prompt")] = "exact",
    answer: Annotated[str | None, typer.Option("--answer", help="reference answer for --prompt")] = None,
) -> None:
    """Solve tasks with MCTS (or sampling) and report accuracy, rollouts, tokens and seconds per task."""
    from insightloop.apps.cli.solve import solve_command

    raise typer.Exit(solve_command(suite, limit, strategy, budget, run_dir, as_json, config, overrides or [],
                                   prompt, verifier, answer))


def _show_suite(name: str, skip_bad: bool) -> int:
    """`insightloop suites --show`: print bad JSONL lines, the size and first task; return the exit code."""
    from insightloop.evals.suites import load_suite
    from insightloop.evals.suites.jsonl import read_task_lines
    from rich.console import Console
    from rich.markup import escape

    console = Console()
    try:
        tasks, problems = (read_task_lines(name.removeprefix("jsonl:"), skip_bad) if name.startswith("jsonl:")
                           else (load_suite(name), []))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        return 2
    for problem in problems:
        console.print(f"[yellow]skipped[/yellow] {escape(str(problem))}")
    console.print(f"[bold]{escape(name)}[/bold]: {len(tasks)} tasks")
    if tasks:
        about = f"verifier {tasks[0].verifier}, answer {tasks[0].answer!r}"
        console.print(f"first: {escape(tasks[0].id)} ({escape(about)})")
        console.print(escape(tasks[0].prompt))
    return 0


@app.command()
def suites(
    rg: Annotated[bool, typer.Option("--rg", help="list the reasoning-gym datasets (rg/<dataset>)")] = False,
    show: Annotated[str | None, typer.Option(
        "--show", help="load one suite (e.g. jsonl:tasks.jsonl) and print its size and first task")] = None,
    skip_bad: Annotated[bool, typer.Option("--skip-bad", help="with --show: skip, report bad lines")] = False,
) -> None:
    """List the task suites with their sizes."""
    from insightloop.evals.suites import RG_DEFAULT_SIZE, list_suites
    from insightloop.evals.suites.rg import dataset_names
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    if show:
        raise typer.Exit(_show_suite(show, skip_bad))
    notes = {"rg/<dataset>": f"any reasoning-gym dataset, size default {RG_DEFAULT_SIZE} (--rg lists them)",
             "jsonl:PATH": "your own tasks, one JSON object per line"}
    rows = [(f"rg/{name}", None) for name in dataset_names()] if rg else list_suites()
    table = Table(title="reasoning-gym datasets" if rg else "task suites")
    table.add_column("suite", no_wrap=True)
    table.add_column("tasks", justify="right")
    table.add_column("notes")
    for name, size in rows:
        table.add_row(escape(name), "-" if size is None else str(size), notes.get(name, ""))
    Console().print(table)


@app.command()
def daemon(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="run directory (inbox/, outbox/, status.json)")],
    config: Annotated[str | None, typer.Option("--config", help="YAML config file")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override config: key=value")] = None,
    exit_when_idle: Annotated[bool, typer.Option(
        "--exit-when-idle", help="exit once the inbox is empty and there is nothing to practise")] = False,
) -> None:
    """Run the improvement daemon: inbox tasks and self-practice, until SIGTERM/SIGINT."""
    import os
    import sys

    from insightloop.apps.daemon.service import DaemonLocked, run_daemon
    from insightloop.core.config import ConfigError, load_config
    from insightloop.core.models import MissingModelError

    try:
        cfg = load_config(config, overrides or [])
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        abandoned = run_daemon(run_dir, cfg, exit_when_idle)
    except DaemonLocked as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(3) from None
    except MissingModelError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if abandoned:  # a worker is still inside an LM call: leave without waiting for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


@app.command()
def status(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="the daemon's run directory")],
    as_json: Annotated[bool, typer.Option("--json", help="print it as JSON (plus `running`)")] = False,
) -> None:
    """Show the daemon's status.json for RUN_DIR."""
    import json
    import time

    from insightloop.apps.daemon.service import lock_holder
    from insightloop.apps.daemon.status import read_status
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    st = read_status(run_dir)
    if st is None:
        typer.echo(f"no status.json in {run_dir}: no daemon has run there yet", err=True)
        raise typer.Exit(1)
    running = lock_holder(run_dir) == st.pid
    if as_json:
        typer.echo(json.dumps({**st.model_dump(mode="json"), "running": running}, indent=2))
        return
    table = Table(title=f"insightloop daemon · {escape(str(run_dir))}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    c = st.counters
    acc = "-" if st.accuracy is None else f"{st.accuracy:.1%} over the last {st.accuracy_n}"
    rows = [("state", st.state), ("process", f"pid {st.pid} " + ("running" if running else "not running")),
            ("current task", st.current_task or "-"),
            ("tasks", f"{c.done} done, {c.failed} failed, {c.pending} pending, {c.practice} practice"),
            ("files", f"{c.files_done} done, {c.files_failed} failed"), ("accuracy", acc),
            ("memory version", str(st.memory_version)), ("checkpoint", st.checkpoint or "base model"),
            ("last error", st.last_error or "-"),
            ("updated", f"{max(0.0, time.time() - st.updated_at):.0f}s ago")]
    for metric, use in st.budget.items():
        cap = "no cap" if use.cap is None else f"cap {use.cap:g}, {use.left:g} left"
        rows.append((f"{metric} / {use.window}", f"{use.used:g} used ({cap})"))
    for key, value in rows:
        table.add_row(key, escape(value))
    Console().print(table)


@app.command()
def adapt(
    suite: Annotated[str, typer.Option("--suite", help="suite to adapt to, e.g. bbh/boolean_expressions")],
    n_train: Annotated[int, typer.Option("--train", min=1, help="training problems")] = 5,
    n_test: Annotated[int, typer.Option("--test", min=1, help="held-out test problems")] = 40,
    budget: Annotated[int, typer.Option("--budget", min=1, help="rollouts for learning")] = 60,
    run_dir: Annotated[Path | None, typer.Option("--run-dir", help="keep the memory there")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object, not a table")] = False,
    seed: Annotated[int, typer.Option("--seed", help="split and sampling seed")] = 0,
    config: Annotated[str | None, typer.Option("--config", help="YAML config file")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override config: key=value")] = None,
) -> None:
    """Few-shot adaptation: baseline vs accuracy after learning insights on a few training problems."""
    from insightloop.apps.cli.adapt import adapt_command

    raise typer.Exit(adapt_command(suite, n_train, n_test, budget, run_dir, as_json, seed, config,
                                   overrides or []))


@app.command()
def demo() -> None:
    """The main job on the embedded models: adapt on a default suite and budget (minutes on 2 CPU cores)."""
    from insightloop.apps.cli.adapt import demo_command

    raise typer.Exit(demo_command())


@app.command()
def fold(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="run directory: episodes, chains, checkpoints")],
    method: Annotated[str | None, typer.Option("--method", help="grpo, sft or dpo (default: config)")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="optimizer steps")] = None,
    lora: Annotated[bool | None, typer.Option("--lora/--full", help="LoRA or full fine-tuning")] = None,
    config: Annotated[str | None, typer.Option("--config", help="YAML config file")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override config: key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object, not a table")] = False,
) -> None:
    """Fold the run's verified attempts and chains into the weights (TRL), gated on held-out accuracy."""
    from insightloop.apps.cli.fold import fold_command

    if method is not None and method not in ("grpo", "sft", "dpo"):
        raise typer.BadParameter("must be grpo, sft or dpo", param_hint="--method")
    raise typer.Exit(fold_command(run_dir, method, steps, lora, config, overrides or [], as_json))


ALL_EVAL_METHODS = ("none", "best-of-n", "episodic-rag", "reflect-success", "core", "core+fold", "grpo",
                    "gepa")


@app.command("eval")
def eval_(
    suite: Annotated[str, typer.Option("--suite", help="suite(s), comma-separated: bbh/navigate,gsm8k")],
    methods: Annotated[str, typer.Option(
        "--methods", help="comma-separated: none, best-of-n, episodic-rag, reflect-success, core, core+fold, "
                          "grpo, gepa")] = ",".join(ALL_EVAL_METHODS),
    n_train: Annotated[int, typer.Option("--train", min=1, help="training problems per seed")] = 5,
    n_test: Annotated[int, typer.Option("--test", min=1, help="test problems per seed")] = 20,
    budget: Annotated[int, typer.Option("--budget", min=1, help="learning rollouts per method and run")] = 30,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="number of seeds (0..S-1)")] = 3,
    seed_start: Annotated[int, typer.Option("--seed-start", min=0, help="first seed (to split a run)")] = 0,
    out: Annotated[Path, typer.Option("--out", help="output folder: results.json, results.md, PNGs")] = Path(
        "eval-results"),
    config: Annotated[str | None, typer.Option("--config", help="YAML config file")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override config: key=value")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="keep finished runs of OUT/results.json")] = False,
) -> None:
    """Benchmark methods side by side: same model, same splits, same rollout budget."""
    from insightloop.apps.cli.eval import eval_command

    raise typer.Exit(eval_command(suite, methods, n_train, n_test, budget, seeds, out, config,
                                  overrides or [], resume, seed_start))


@app.command()
def bench(
    config: Annotated[str | None, typer.Option("--config", help="YAML config file")] = None,
    overrides: Annotated[list[str] | None, typer.Option("--set", help="override config: key=value")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object, not a table")] = False,
) -> None:
    """Cost benchmark on this machine: tokens/s (hf vs llama.cpp), MCTS rollouts/s, episode, fold step,
    memory queries/s."""
    from insightloop.apps.bench import bench_command

    raise typer.Exit(bench_command(config, overrides or [], as_json))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
