"""The options the commands share, spelled once: `--config`, `--set`, `--json`, `--run-dir`.

A command declares `config: ConfigFile = None, overrides: Overrides = None` and calls
`load(config, overrides)` for a validated `Config`; a wrong file, key or value raises `ConfigError`,
which the error boundary prints. `--json` and `--run-dir` take a help text per command (what the run
directory holds differs), through `json_option` and `run_dir_option`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import typer
from insightloop.core.config import Config, load_config

ConfigFile = Annotated[str | None, typer.Option(
    "--config", help="YAML config file (default: the bundled configs/default.yaml)")]
Overrides = Annotated[list[str] | None, typer.Option(
    "--set", help="override config: key=value (repeatable)")]


def json_option(text: str = "print one JSON object, not a table") -> Any:
    """`--json`: machine-readable output on stdout; `text` is its help."""
    return typer.Option("--json", help=text)


def run_dir_option(text: str) -> Any:
    """`--run-dir`, with what this command reads or writes there as its help."""
    return typer.Option("--run-dir", help=text)


AsJson = Annotated[bool, json_option()]


def load(config: str | None, overrides: Sequence[str] | None, *, first: Sequence[str] = ()) -> Config:
    """The validated config: `config` (or the bundled default), then `first`, then the user's `--set`s.

    `first` holds a command's own settings (the demo's, the benchmark's), so `--set` can still
    override them.
    """
    return load_config(config, [*first, *(overrides or [])])
