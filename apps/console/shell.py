"""The interactive console (`insightloop inspect`): open a run directory, then read, run, print.

`open_inspector` opens the run's memory read-only through the runtime factory (so the embedder
runs on the configured `memory.embed_device`). `run_shell` is the loop: readline completion and
persistent history on a TTY, plain line input (echoed, so piped output reads as a transcript)
otherwise. `inspect_main` runs `--command` lines and exits, or opens the loop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from insightloop.apps.console.commands import Inspector
from insightloop.apps.console.parsing import CommandError
from insightloop.apps.console.views import ErrorText
from insightloop.apps.runtime import Runtime
from insightloop.core.config import load_config
from insightloop.core.models import cache_dir
from rich.console import Console
from rich.text import Text

PROMPT = "inspect> "


def open_inspector(run_dir: Path, config_path: str | None = None,
                   overrides: Sequence[str] | None = None) -> tuple[Inspector, Callable[[], None]]:
    """A read-only `Inspector` on a run directory, plus a function that closes it.

    Raises `CommandError` when `run_dir` holds no memory, `ConfigError` for a bad config.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "memory.sqlite").is_file():
        raise CommandError(f"{run_dir} is not a run directory (no memory.sqlite in it)")
    runtime = Runtime(load_config(config_path, list(overrides or [])), run_dir)
    store = runtime.memory(readonly=True)  # the embedder loads its model on first use: listing never waits

    def writer() -> AbstractContextManager[Any]:
        return runtime.memory(readonly=False)

    return Inspector(run_dir, store, writer), runtime.close


def _history_path() -> Path:
    return cache_dir() / "inspect_history"


def _setup_readline(inspector: Inspector) -> Callable[[], None]:
    """Tab completion and persistent history; returns a function that saves the history."""
    import readline

    def completer(text: str, state: int) -> str | None:
        options = inspector.complete(readline.get_line_buffer(), text)
        return options[state] if state < len(options) else None

    readline.set_completer(completer)
    readline.set_completer_delims(" \t")
    readline.parse_and_bind("tab: complete")
    path = _history_path()
    if path.is_file():
        readline.read_history_file(str(path))
    readline.set_history_length(1000)

    def save() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        readline.write_history_file(str(path))

    return save


def _read_line(prompt: str, tty: bool, console: Console) -> str | None:
    """One input line, or None at end of input."""
    if tty:
        try:
            return input(prompt)
        except EOFError:  # Ctrl-D: leave on a fresh line
            console.print()
            return None
    console.print(prompt, end="")
    line = sys.stdin.readline()
    if not line:
        console.print()
        return None
    # Echo the command, so a piped session reads as a transcript.
    console.print(line.rstrip("\n"), markup=False, highlight=False)
    return line.rstrip("\n")


def run_command(inspector: Inspector, console: Console, line: str) -> bool:
    """Run and print one command; returns False when it failed. Unexpected faults print one line."""
    try:
        result = inspector.execute(line)
    except Exception as e:  # noqa: BLE001 - a console reports any fault as one line and stays up
        console.print(Text(f"error: {type(e).__name__}: {e}", style="red"))
        return False
    console.print(result)
    return not isinstance(result, ErrorText)


def run_shell(inspector: Inspector, console: Console, tty: bool | None = None) -> None:
    """The interactive loop: prompt, run, print; `quit`, `exit` or end of input leaves."""
    tty = sys.stdin.isatty() if tty is None else tty
    save_history = _setup_readline(inspector) if tty else None
    console.print(Text.assemble(("insightloop inspect", "bold cyan"), f"  {inspector.run_dir}  ",
                                (f"memory v{inspector.store.version}", "green"),
                                "  — 'help' lists commands, Tab completes, 'quit' leaves"))
    try:
        while True:
            try:
                line = _read_line(PROMPT, tty, console)
                if line is None or line.strip().lower() in ("quit", "exit"):
                    break
                run_command(inspector, console, line)
            except KeyboardInterrupt:  # Ctrl-C drops the line or the command in progress, not the console
                console.print(Text("\n(interrupted; 'quit' leaves)", style="yellow"))
            if not tty:
                console.print()
    finally:
        if save_history is not None:
            save_history()
    console.print("bye")


def inspect_main(run_dir: Path, commands: Sequence[str], config_path: str | None = None, *,
                 overrides: Sequence[str] | None = None, console: Console | None = None) -> int:
    """`insightloop inspect`: run the given commands and exit, or open the interactive console.

    Returns the process exit code: 0 on success, 1 when a command failed, 2 when the run directory
    cannot be opened (said in the console's output, like every other console message).
    """
    if console is None:
        # Scripts piping the output get wide tables unless they ask otherwise (COLUMNS).
        wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
        console = Console(width=140 if wide else None)
    try:
        inspector, close = open_inspector(run_dir, config_path, overrides)
    except CommandError as e:
        console.print(Text(str(e), style="red"))
        return 2
    try:
        if commands:
            results = [run_command(inspector, console, line) for line in commands]
            return 0 if all(results) else 1
        run_shell(inspector, console)
        return 0
    finally:
        close()
