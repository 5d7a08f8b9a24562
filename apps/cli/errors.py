"""The CLI's one error boundary: a known user error becomes one line on stderr and its exit code.

The root command group is an `ErrorBoundary`, so every command runs inside its `invoke`: a
`core.errors.UserError` raised anywhere below (a bad config or `--set`, a missing model package, a
malformed task file, refused credentials, another daemon holding the run directory) prints
`error: <message>` as one line on stderr and exits with the error's `exit_code`. Anything else is a
bug or a systemic fault and keeps its traceback. Commands raise `CommandError` for what they detect
themselves, and `user_errors(...)` marks the few library exceptions that mean "bad input" there.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click
import typer
from insightloop.core.errors import UserError
from typer.core import TyperGroup


class CommandError(UserError):
    """A bad request a command detects itself (a flag combination, an unusable suite)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def one_line(err: BaseException) -> str:
    """The error's message on one line; a multi-line one (a config with several wrong keys) keeps its
    head and joins the rest with '; ', so a script reading stderr sees one line per failure."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    head, rest = lines[0], lines[1:]
    return head + (" " + "; ".join(rest) if rest else "")


def report(err: UserError) -> int:
    """Print `err` as the boundary does and return its exit code."""
    typer.echo(f"error: {one_line(err)}", err=True)
    return int(err.exit_code)


@contextmanager
def user_errors(*kinds: type[Exception], exit_code: int = 2) -> Iterator[None]:
    """Treat `kinds` raised in the block as bad input (libraries that say so with a ValueError).

    A `UserError` passes through unchanged, so its own exit code wins.
    """
    try:
        yield
    except UserError:
        raise
    except kinds as exc:
        raise CommandError(str(exc), exit_code) from exc


class ErrorBoundary(TyperGroup):
    """The root group: subcommands (and nested groups) run inside `invoke`, so one handler sees all."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except UserError as err:
            ctx.exit(report(err))
