"""`insightloop insights ...`: list, show, search, diff, roll back, export and import a run's memory.

Tables through rich (the insight table and the diff are the console's own renderers, so both
show the same thing); `--json` prints machine-readable JSON instead. The memory is opened through
the runtime factory with `--config`/`--set`; only `search` and `import` (and a rollback that
restores changed texts) load the embedding model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from insightloop.apps.cli.errors import CommandError
from insightloop.apps.cli.options import ConfigFile, Overrides, json_option, load, run_dir_option
from insightloop.apps.console.views_insights import diff_table, insight_table
from insightloop.apps.runtime import Runtime
from insightloop.memory.db import DB_NAME
from insightloop.memory.store import MemoryStore
from rich.console import Console
from rich.markup import escape
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Inspect and manage a run's insight memory.")

RunDir = Annotated[Path, run_dir_option("the run directory (holds memory.sqlite)")]
AsJson = Annotated[bool, json_option("print JSON instead of a table")]
Embedder = Annotated[str | None, typer.Option(
    "--embedder", help="embedding model: embedded, hashing, or a path (default: the config's "
                       "memory.embedder, embedded)")]


@contextmanager
def _memory(run_dir: Path, config: str | None, overrides: list[str] | None, *, readonly: bool,
            embedder: str | None = None, create: bool = False) -> Iterator[MemoryStore]:
    """The run's memory store, opened through the runtime (embedder on `memory.embed_device`).

    Only `create` (an import, which may restore a memory into a new run directory) makes one; any
    other command on a directory without memory.sqlite is refused, so a mistyped --run-dir is named
    rather than created.
    """
    cfg = load(config, overrides)
    if not create and not (run_dir / DB_NAME).is_file():
        raise CommandError(f"no memory in {run_dir} (it holds no {DB_NAME}); check --run-dir")
    if embedder is not None:
        cfg = cfg.model_copy(update={"memory": cfg.memory.model_copy(update={"embedder": embedder})})
    with Runtime(cfg, run_dir) as runtime:
        yield runtime.memory(readonly=readonly)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


@app.command("list")
def list_cmd(
    run_dir: RunDir,
    status: Annotated[str | None, typer.Option(help="active, pending or retired")] = None,
    sort: Annotated[str, typer.Option(help="utility, uses or recent")] = "utility",
    limit: Annotated[int | None, typer.Option(help="show at most this many")] = None,
    as_json: AsJson = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """List insights with their measured utility."""
    with _memory(run_dir, config, overrides, readonly=True) as store:
        try:
            rows = store.list_insights(status=status, sort=sort, limit=limit)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        version = store.version
    if as_json:
        _print_json({"version": version, "insights": [r.model_dump(mode="json") for r in rows]})
    else:
        Console().print(insight_table(rows, f"insights (memory v{version}, sorted by {sort})", text_chars=None))


@app.command("show")
def show_cmd(insight_id: str, run_dir: RunDir, as_json: AsJson = False, config: ConfigFile = None,
             overrides: Overrides = None) -> None:
    """One insight: text, statistics, provenance and per-task credit."""
    with _memory(run_dir, config, overrides, readonly=True) as store:
        try:
            ins = store.get(insight_id)
        except KeyError:
            raise typer.BadParameter(f"no insight {insight_id!r}", param_hint="ID") from None
        stats = store.task_stats(insight_id)
    if as_json:
        _print_json({**ins.model_dump(mode="json"), "utility": ins.utility, "utility_ci": list(ins.utility_ci),
                     "task_stats": [s.model_dump(mode="json") for s in stats]})
        return
    table = Table(title=f"insight {ins.id}", show_header=False)
    for key, value in ins.model_dump(mode="json").items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
        table.add_row(key, escape(shown))
    lo, hi = ins.utility_ci
    table.add_row("utility", f"{ins.utility:+.3f}  (95% CI [{lo:+.3f}, {hi:+.3f}])")
    for s in stats:
        table.add_row(f"task {s.task_id}", f"{s.uses} uses, utility {s.utility:+.3f}")
    Console().print(table)


@app.command("search")
def search_cmd(
    text: str,
    run_dir: RunDir,
    k: Annotated[int, typer.Option("-k", help="how many")] = 10,
    embedder: Embedder = None,
    as_json: AsJson = False,
    config: ConfigFile = None,
    overrides: Overrides = None,
) -> None:
    """Insights whose text is most similar to TEXT."""
    with _memory(run_dir, config, overrides, readonly=True, embedder=embedder) as store:
        hits = store.search(text, k)
    if as_json:
        _print_json([{"score": s, **ins.model_dump(mode="json")} for ins, s in hits])
    else:
        Console().print(insight_table([h[0] for h in hits], f"insights like {text!r}", scores=[h[1] for h in hits],
                                      text_chars=None))


@app.command("diff")
def diff_cmd(v1: int, v2: int, run_dir: RunDir, as_json: AsJson = False, config: ConfigFile = None,
             overrides: Overrides = None) -> None:
    """What changed in the insights from version V1 to V2."""
    with _memory(run_dir, config, overrides, readonly=True) as store:
        try:
            d = store.diff(v1, v2)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    if as_json:
        _print_json(d.model_dump(mode="json"))
    else:
        Console().print(diff_table(d, v1, v2))


@app.command("rollback")
def rollback_cmd(version: int, run_dir: RunDir, embedder: Embedder = None, as_json: AsJson = False,
                 config: ConfigFile = None, overrides: Overrides = None) -> None:
    """Restore the insights exactly as they were at VERSION (recorded as a new version)."""
    with _memory(run_dir, config, overrides, readonly=False, embedder=embedder) as store:
        try:
            new = store.rollback(version)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    if as_json:
        _print_json({"rolled_back_to": version, "version": new})
    else:
        print(f"insights restored to v{version}; memory is now at v{new}")


@app.command("export")
def export_cmd(path: Path, run_dir: RunDir, as_json: AsJson = False, config: ConfigFile = None,
               overrides: Overrides = None) -> None:
    """Write the memory (insights with statistics, tasks, baselines, attempts) as JSON lines."""
    with _memory(run_dir, config, overrides, readonly=True) as store:
        lines = store.export_jsonl(path)
    if as_json:
        _print_json({"path": str(path), "lines": lines})
    else:
        print(f"wrote {lines} lines to {path}")


@app.command("import")
def import_cmd(path: Path, run_dir: RunDir, embedder: Embedder = None, as_json: AsJson = False,
               config: ConfigFile = None, overrides: Overrides = None) -> None:
    """Merge a JSON-lines export into this run's memory."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    with _memory(run_dir, config, overrides, readonly=False, embedder=embedder, create=True) as store:
        try:
            report = store.import_jsonl(path)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="PATH") from None
        version = store.version
    if as_json:
        _print_json({**report.model_dump(), "version": version})
    else:
        print(f"imported: {report.added} added, {report.merged} merged, {report.skipped} skipped, "
              f"{report.tasks} tasks, {report.baselines} baselines, {report.attempts} attempts; now v{version}")
