"""The `insightloop` command line: builds the typer app and registers every command.

One module per command group (solve, adapt and demo, suites, daemon and status, inspect, insights,
fold, eval, bench), each a plain typed function declared with the shared options of `options`.
The heavy libraries (torch, transformers, TRL, litellm, FAISS, sentence-transformers, matplotlib)
load only when a command builds a model, an index or a plot, so `--help` stays fast. The root group
is the CLI's one error boundary (`errors.ErrorBoundary`): any `UserError` below it becomes one line
on stderr and its exit code.
"""

from __future__ import annotations

import typer
from insightloop.apps.cli import adapt, bench, console, daemon, fold, insights, solve, suites
from insightloop.apps.cli import eval as eval_cmd
from insightloop.apps.cli.errors import ErrorBoundary

app = typer.Typer(cls=ErrorBoundary, add_completion=False, no_args_is_help=True,
                  help="insightloop: a self-improving agent with insight memory.")

app.add_typer(insights.app, name="insights")
for name, command in (("inspect", console.inspect), ("solve", solve.solve), ("suites", suites.suites),
                      ("daemon", daemon.daemon), ("status", daemon.status), ("adapt", adapt.adapt),
                      ("demo", adapt.demo), ("fold", fold.fold), ("eval", eval_cmd.eval_),
                      ("bench", bench.bench)):
    app.command(name)(command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
