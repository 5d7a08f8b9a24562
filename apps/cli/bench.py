"""`insightloop bench`: run the cost benchmark of `apps/bench.py` and print its figures.

The measurements (and the small search settings they run with) belong to `apps/bench.py`; `--set`
overrides apply after those settings.
"""

from __future__ import annotations

import json

from insightloop.apps.bench import BENCH_SEARCH, lines, run_bench
from insightloop.apps.cli.options import AsJson, ConfigFile, Overrides, load
from rich.console import Console
from rich.markup import escape
from rich.table import Table


def bench(config: ConfigFile = None, overrides: Overrides = None, as_json: AsJson = False) -> None:
    """Cost benchmark on this machine: tokens/s (hf vs llama.cpp), MCTS rollouts/s, episode, fold step,
    memory queries/s."""
    cfg = load(config, overrides, first=BENCH_SEARCH)
    err = Console(stderr=True)
    res = run_bench(cfg, lambda m: err.print(f"[dim]measuring {escape(m)}...[/]"))
    if as_json:
        print(json.dumps(res.model_dump()))
        return
    table = Table(title=f"insightloop bench: {escape(cfg.policy.model)} model, {res.cpus} CPUs")
    table.add_column("measure")
    table.add_column("result", justify="right")
    for name, value in lines(res):
        table.add_row(name, escape(value))
    Console().print(table)
