"""The console's command language: each command's usage line, its arguments, and completion words.

`COMMANDS` holds each command's usage and summary (what `help` shows) and `ARGUMENTS` its argparse
arguments, side by side so they stay in step. `parse(name, argv)` parses one command's words and
raises `CommandError` (one line, with the usage) where argparse would print and exit the process.
"""

from __future__ import annotations

import argparse
from typing import Any

COMMANDS: dict[str, tuple[str, str]] = {
    "help": ("help [COMMAND]", "list the commands, or show one command's usage"),
    "insights": ("insights [--sort utility|uses|recent] [--status active|retired|pending|all] [--limit N]",
                 "the insights, as a table"),
    "insight": ("insight ID", "one insight in full: utility and history, provenance, contrast pair, effect"),
    "search": ("search TEXT [--k N]", "semantic search over insight texts"),
    "episodes": ("episodes [--failed] [--limit N]", "the episodes, newest first"),
    "episode": ("episode ID [--node N]", "one episode: task, insights used, reward, the search tree"),
    "versions": ("versions [--limit N]", "memory versions (one per change)"),
    "diff": ("diff V1 V2", "memory changes between two versions"),
    "curve": ("curve [--window N] [--png PATH]", "rolling accuracy with/without insights, and the lift"),
    "budget": ("budget", "spend so far: rollouts, tokens, usd"),
    "approve": ("approve ID [REASON]", "mark an insight active (a recorded memory event)"),
    "reject": ("reject ID [REASON]", "retire an insight (a recorded memory event)"),
    "edit": ("edit ID TEXT", "replace an insight's text (a recorded memory event)"),
    "checkpoints": ("checkpoints", "weight folds and their gate results"),
    "quit": ("quit", "leave the console (also: exit, Ctrl-D)"),
}
ID_COMMANDS = {"insight", "approve", "reject", "edit"}  # their first argument is an insight id

Argument = tuple[tuple[str, ...], dict[str, Any]]
_CURATE: list[Argument] = [(("id",), {}), (("reason",), {"nargs": "*"})]
ARGUMENTS: dict[str, list[Argument]] = {
    "help": [(("command",), {"nargs": "*"})],
    "insights": [(("--sort",), {"choices": ["utility", "uses", "recent"], "default": "utility"}),
                 (("--status",), {"choices": ["active", "retired", "pending", "all"], "default": "all"}),
                 (("--limit",), {"type": int, "default": 50})],
    "insight": [(("id",), {})],
    "search": [(("text",), {"nargs": "+"}), (("--k",), {"type": int, "default": 10})],
    "episodes": [(("--failed",), {"action": "store_true"}), (("--limit",), {"type": int, "default": 50})],
    "episode": [(("id",), {}), (("--node",), {"type": int, "default": None})],
    "versions": [(("--limit",), {"type": int, "default": 40})],
    "diff": [(("v1",), {"type": int}), (("v2",), {"type": int})],
    "curve": [(("--window",), {"type": int, "default": 20}), (("--png",), {"default": None})],
    "budget": [],
    "approve": _CURATE,
    "reject": _CURATE,
    "edit": [(("id",), {}), (("text",), {"nargs": "+"})],
    "checkpoints": [],
    "quit": [(("rest",), {"nargs": "*"})],  # anything after `quit` is ignored
}


class CommandError(Exception):
    """A user-facing error (bad arguments, unknown id): shown as one line, never a traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse that raises `CommandError` instead of printing usage and exiting the process."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(f"{self.prog}: {message}  (usage: {COMMANDS[self.prog][0]})")


def parse(name: str, argv: list[str]) -> argparse.Namespace:
    """Parse the words after command `name` (one of `COMMANDS`)."""
    parser = _Parser(prog=name, add_help=False)
    for flags, options in ARGUMENTS[name]:
        parser.add_argument(*flags, **options)
    return parser.parse_args(argv)


def option_flags(name: str) -> list[str]:
    """The `--flags` command `name` takes (for completion)."""
    return [flag for flags, _ in ARGUMENTS.get(name, []) for flag in flags if flag.startswith("--")]
