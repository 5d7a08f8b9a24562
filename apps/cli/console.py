"""`insightloop inspect`: the interactive console on a run directory (`apps/console`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from insightloop.apps.cli.options import ConfigFile, Overrides, run_dir_option
from insightloop.apps.console.shell import inspect_main


def inspect(
    run_dir: Annotated[Path, run_dir_option("the run directory to open (read-only)")],
    command: Annotated[list[str] | None, typer.Option(
        "--command", "-c", help="run this console command and exit (repeatable)")] = None,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Open the interactive console: what was learned, why, and whether it helps."""
    raise typer.Exit(inspect_main(run_dir, command or [], config, overrides=overrides))
