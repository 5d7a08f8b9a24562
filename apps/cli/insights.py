"""`insightloop insights ...`: list, show, search, diff, roll back, export and import a run's memory.

Tables through rich; `--json` prints machine-readable JSON instead. Only `search` and `import` (and
a rollback that restores changed texts) load the embedding model.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

insights_app = typer.Typer(no_args_is_help=True, help="Inspect and manage a run's insight memory.")

RUN_DIR = typer.Option(..., "--run-dir", help="the run directory (holds memory.sqlite)")
AS_JSON = typer.Option(False, "--json", help="print JSON instead of a table")
EMBEDDER = typer.Option("embedded", "--embedder", help="embedding model: embedded, hashing, or a path")


@contextmanager
def _store(run_dir: Path, embedder: str, readonly: bool) -> Iterator[Any]:
    from insightloop.core.config import MemoryConfig
    from insightloop.memory.embed import make_embedder
    from insightloop.memory.store import MemoryStore

    if readonly and not (run_dir / "memory.sqlite").is_file():
        raise typer.BadParameter(f"{run_dir} holds no memory.sqlite", param_hint="--run-dir")
    cfg = MemoryConfig(embedder=embedder)
    with MemoryStore.open(
        run_dir, make_embedder(embedder, cfg.embed_device), cfg, readonly=readonly
    ) as store:
        yield store


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def _console() -> Any:
    from rich.console import Console

    return Console()


def _esc(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _insight_table(rows: list[Any], title: str, scores: list[float] | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title)
    if scores is not None:
        table.add_column("sim", justify="right")
    for col in ("id", "kind", "status", "uses", "utility", "95% CI", "text"):
        table.add_column(
            col,
            justify="right" if col in ("uses", "utility") else "left",
            overflow="fold" if col == "text" else "ellipsis",
            no_wrap=col != "text",
            min_width=13 if col == "id" else None,
        )
    for i, ins in enumerate(rows):
        lo, hi = ins.utility_ci
        cells = [
            ins.id,
            ins.kind,
            ins.status,
            str(ins.uses),
            f"{ins.utility:+.3f}",
            f"[{lo:+.2f}, {hi:+.2f}]",
            _esc(ins.text),
        ]
        table.add_row(*([f"{scores[i]:.3f}"] if scores is not None else []), *cells)
    return table


@insights_app.command("list")
def list_cmd(
    run_dir: Path = RUN_DIR,
    status: str | None = typer.Option(None, help="active, pending or retired"),
    sort: str = typer.Option("utility", help="utility, uses or recent"),
    limit: int | None = typer.Option(None, help="show at most this many"),
    as_json: bool = AS_JSON,
) -> None:
    """List insights with their measured utility."""
    with _store(run_dir, "embedded", readonly=True) as store:
        try:
            rows = store.list_insights(status=status, sort=sort, limit=limit)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
        version = store.version
    if as_json:
        _print_json({"version": version, "insights": [r.model_dump(mode="json") for r in rows]})
    else:
        _console().print(_insight_table(rows, f"insights (memory v{version}, sorted by {sort})"))


@insights_app.command("show")
def show_cmd(insight_id: str, run_dir: Path = RUN_DIR, as_json: bool = AS_JSON) -> None:
    """One insight: text, statistics, provenance and per-task credit."""
    with _store(run_dir, "embedded", readonly=True) as store:
        try:
            ins = store.get(insight_id)
        except KeyError:
            raise typer.BadParameter(f"no insight {insight_id!r}", param_hint="ID") from None
        stats = store.task_stats(insight_id)
    if as_json:
        _print_json(
            {
                **ins.model_dump(mode="json"),
                "utility": ins.utility,
                "utility_ci": list(ins.utility_ci),
                "task_stats": [s.model_dump(mode="json") for s in stats],
            }
        )
        return
    from rich.table import Table

    table = Table(title=f"insight {ins.id}", show_header=False)
    for key, value in ins.model_dump(mode="json").items():
        shown = json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else str(value)
        table.add_row(key, _esc(shown))
    lo, hi = ins.utility_ci
    table.add_row("utility", f"{ins.utility:+.3f}  (95% CI [{lo:+.3f}, {hi:+.3f}])")
    for s in stats:
        table.add_row(f"task {s.task_id}", f"{s.uses} uses, utility {s.utility:+.3f}")
    _console().print(table)


@insights_app.command("search")
def search_cmd(
    text: str,
    run_dir: Path = RUN_DIR,
    k: int = typer.Option(10, "-k", help="how many"),
    embedder: str = EMBEDDER,
    as_json: bool = AS_JSON,
) -> None:
    """Insights whose text is most similar to TEXT."""
    with _store(run_dir, embedder, readonly=True) as store:
        hits = store.search(text, k)
    if as_json:
        _print_json([{"score": s, **ins.model_dump(mode="json")} for ins, s in hits])
    else:
        _console().print(
            _insight_table([h[0] for h in hits], f"insights like {text!r}", [h[1] for h in hits])
        )


@insights_app.command("diff")
def diff_cmd(v1: int, v2: int, run_dir: Path = RUN_DIR, as_json: bool = AS_JSON) -> None:
    """What changed in the insights from version V1 to V2."""
    with _store(run_dir, "embedded", readonly=True) as store:
        try:
            d = store.diff(v1, v2)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    if as_json:
        _print_json(d.model_dump(mode="json"))
        return
    from rich.table import Table

    table = Table(title=f"memory v{v1} → v{v2} ({len(d.events)} events)")
    for col in ("change", "id", "details"):
        table.add_column(col, overflow="fold")
    for ins in d.added:
        table.add_row("[green]added[/]", ins.id, _esc(f"[{ins.status}] {ins.text}"))
    for ins in d.removed:
        table.add_row("[red]removed[/]", ins.id, _esc(f"[{ins.status}] {ins.text}"))
    for ch in d.changed:
        details = "; ".join(f"{k}: {a!r} → {b!r}" for k, (a, b) in ch.fields.items() if k != "version")
        table.add_row("[yellow]changed[/]", ch.id, _esc(details))
    _console().print(table)


@insights_app.command("rollback")
def rollback_cmd(
    version: int, run_dir: Path = RUN_DIR, embedder: str = EMBEDDER, as_json: bool = AS_JSON
) -> None:
    """Restore the insights exactly as they were at VERSION (recorded as a new version)."""
    with _store(run_dir, embedder, readonly=False) as store:
        try:
            new = store.rollback(version)
        except ValueError as e:
            raise typer.BadParameter(str(e)) from None
    if as_json:
        _print_json({"rolled_back_to": version, "version": new})
    else:
        print(f"insights restored to v{version}; memory is now at v{new}")


@insights_app.command("export")
def export_cmd(path: Path, run_dir: Path = RUN_DIR, as_json: bool = AS_JSON) -> None:
    """Write the memory (insights with statistics, tasks, baselines, attempts) as JSON lines."""
    with _store(run_dir, "embedded", readonly=True) as store:
        lines = store.export_jsonl(path)
    if as_json:
        _print_json({"path": str(path), "lines": lines})
    else:
        print(f"wrote {lines} lines to {path}")


@insights_app.command("import")
def import_cmd(
    path: Path, run_dir: Path = RUN_DIR, embedder: str = EMBEDDER, as_json: bool = AS_JSON
) -> None:
    """Merge a JSON-lines export into this run's memory."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} does not exist", param_hint="PATH")
    with _store(run_dir, embedder, readonly=False) as store:
        try:
            report = store.import_jsonl(path)
        except ValueError as e:
            raise typer.BadParameter(str(e), param_hint="PATH") from None
        version = store.version
    if as_json:
        _print_json({**report.model_dump(), "version": version})
    else:
        print(
            f"imported: {report.added} added, {report.merged} merged, {report.skipped} skipped, "
            f"{report.tasks} tasks, {report.baselines} baselines, {report.attempts} attempts; now v{version}"
        )
