"""The `insightloop` command line (typer). Heavy imports happen inside commands, so `--help` is fast."""

from __future__ import annotations

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="insightloop: a self-improving agent with insight memory.")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
