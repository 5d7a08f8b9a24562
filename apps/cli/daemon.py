"""`insightloop daemon` (run the improvement service) and `insightloop status` (what it is doing).

The daemon itself is `apps.daemon`; this module parses the flags, runs it, and renders status.json.
Another daemon holding the run directory (`DaemonLocked`, exit code 3), a missing model package or
a bad config (exit code 2) are user errors: the error boundary prints them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from insightloop.apps.cli.options import ConfigFile, Overrides, json_option, load, run_dir_option
from insightloop.apps.daemon.lock import lock_holder
from insightloop.apps.daemon.run import run_daemon
from insightloop.apps.daemon.status import DaemonStatus, read_status
from insightloop.apps.distributed.cluster import requested_workers
from insightloop.apps.distributed.run import run_daemon_on_ray
from rich.console import Console
from rich.markup import escape
from rich.table import Table

DaemonRunDir = Annotated[Path, run_dir_option("run directory (inbox/, outbox/, status.json)")]
StatusRunDir = Annotated[Path, run_dir_option("the daemon's run directory")]
Workers = Annotated[int | None, typer.Option(
    "--workers", min=0, help="run episodes on N Ray workers (default: ray.workers; 0: one process, no Ray)")]
RayAddress = Annotated[str | None, typer.Option(
    "--ray-address", help="join this Ray cluster (default: ray.address; unset: start a local one)")]


def daemon(
    run_dir: DaemonRunDir,
    config: ConfigFile = None,
    overrides: Overrides = None,
    exit_when_idle: Annotated[bool, typer.Option(
        "--exit-when-idle", help="exit once the inbox is empty and there is nothing to practise")] = False,
    workers: Workers = None,
    ray_address: RayAddress = None,
) -> None:
    """Run the improvement daemon: inbox tasks and self-practice, until SIGTERM/SIGINT."""
    cfg = load(config, overrides)
    n = requested_workers(cfg.ray, workers, ray_address)
    if n:  # episodes on Ray workers; the single-process path below never imports Ray
        run_daemon_on_ray(run_dir, cfg, n, ray_address, exit_when_idle)
        return
    abandoned = run_daemon(run_dir, cfg, exit_when_idle)
    if abandoned:  # a worker is still inside an LM call: leave without waiting for it
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


def status(
    run_dir: StatusRunDir,
    as_json: Annotated[bool, json_option("print it as JSON (plus `running`)")] = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Show the daemon's status.json for RUN_DIR."""
    load(config, overrides)  # a wrong config fails here as it would for the daemon it describes
    st = read_status(run_dir)
    if st is None:
        typer.echo(f"no status.json in {run_dir}: no daemon has run there yet", err=True)
        raise typer.Exit(1)
    running = lock_holder(run_dir) == st.pid
    if as_json:
        typer.echo(json.dumps({**st.model_dump(mode="json"), "running": running}, indent=2))
    else:
        Console().print(status_table(st, run_dir, running))


def fold_summary(st: DaemonStatus) -> str:
    """The folds in one line: totals by verdict, then the last one's gate numbers and time."""
    totals = ", ".join(f"{n} {status}" for status, n in sorted(st.fold_totals.items()))
    last = st.folds[-1]
    gate = ""
    if last.old_accuracy is not None and last.new_accuracy is not None:
        gate = f" {last.old_accuracy:.2f} → {last.new_accuracy:.2f} on {last.n} held-out"
    if last.ci_low is not None and last.ci_high is not None:
        gate += f", change in [{last.ci_low:+.2f}, {last.ci_high:+.2f}]"
    secs = f", {last.seconds:.0f}s" if last.seconds is not None else ""
    return f"{totals}; last: #{last.index} {last.method} {last.status}{gate}{secs}"


def status_table(st: DaemonStatus, run_dir: Path, running: bool) -> Table:
    """status.json as a two-column table: state, process, progress, spend per budget window."""
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
    if st.folds:
        rows.insert(-2, ("folds", fold_summary(st)))
    if c.junk:
        rows.insert(4, ("inbox junk", f"{c.junk} waiting that are not valid tasks (lines, or whole files): "
                                      "they will go to failed/ with the reason"))
    for metric, use in st.budget.items():
        cap = "no cap" if use.cap is None else f"cap {use.cap:g}, {use.left:g} left"
        rows.append((f"{metric} / {use.window}", f"{use.used:g} used ({cap})"))
    for key, value in rows:
        table.add_row(key, escape(value))
    return table
