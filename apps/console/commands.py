"""The console's command layer: `Inspector.execute(line)` runs one command, returns a renderable.

It is testable without a terminal. It reads the run directory through a read-only store (safe
while a daemon writes) and opens a writer only for the curation commands (approve, reject, edit),
briefly. Parsing lives in `parsing`, rendering in the `views*` modules; each `cmd_*` method here
fetches what its view needs.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from insightloop.apps.console import views_episodes, views_insights, views_run
from insightloop.apps.console.curve import EpisodePoint, learning_curve, save_curve_png
from insightloop.apps.console.parsing import COMMANDS, ID_COMMANDS, CommandError, option_flags, parse
from insightloop.apps.console.views import message
from insightloop.core.episode import Episode
from insightloop.memory.records import Insight, MemoryDiff, MemoryEvent, TaskStats
from insightloop.memory.summaries import EpisodeSummary
from insightloop.rl import checkpoints
from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text


class StoreView(Protocol):
    """The part of `MemoryStore` the console reads. `get` and `get_episode` raise KeyError for an
    unknown id. A writer (for curation) also has `set_status(id, status, reason)` and `edit(id, text)`."""

    version: int

    def get(self, insight_id: str) -> Insight: ...
    def list_insights(self, status: Any = None, sort: str = "utility",
                      limit: int | None = None) -> list[Insight]: ...
    def search(self, text: str, k: int = 10) -> list[tuple[Insight, float]]: ...
    def get_episode(self, episode_id: str) -> Episode: ...
    def list_episodes(self, failed_only: bool = False, limit: int | None = None) -> list[Episode]: ...
    def episode_summaries(self) -> list[EpisodeSummary]: ...
    def versions(self) -> list[MemoryEvent]: ...
    def events(self, since_version: int = 0) -> list[MemoryEvent]: ...
    def diff(self, v1: int, v2: int) -> MemoryDiff: ...
    def task_stats(self, insight_id: str) -> list[TaskStats]: ...


WriterFactory = Callable[[], AbstractContextManager[Any]]


def _get_or_none(getter: Callable[[str], Any], key: str) -> Any:
    try:
        return getter(key)
    except KeyError:
        return None


class Inspector:
    """One method per command (`cmd_<name>`), each returning a rich renderable."""

    def __init__(self, run_dir: Path, store: StoreView, writer: WriterFactory | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.store = store
        self.writer = writer

    # ---- dispatch -------------------------------------------------------------------------
    def execute(self, line: str) -> RenderableType:
        """Run one command line; errors come back as a red one-line message."""
        try:
            argv = shlex.split(line)
        except ValueError as e:
            return message(f"cannot parse that line: {e}", "red")
        if not argv:
            return Text("")
        name = argv[0].lower()
        handler = getattr(self, f"cmd_{name}", None) if name in COMMANDS else None
        if handler is None:
            return message(f"unknown command {argv[0]!r}; type 'help' for the list", "red")
        try:
            return handler(argv[1:])
        except CommandError as e:
            return message(str(e), "red")

    def cmd_help(self, argv: list[str]) -> RenderableType:
        wanted = parse("help", argv).command
        if wanted:
            if wanted[0] not in COMMANDS:
                raise CommandError(f"no command {wanted[0]!r}; type 'help' for the list")
            usage, summary = COMMANDS[wanted[0]]
            return Text.assemble((usage, "bold"), "\n  ", summary)
        table = Table(box=box.SIMPLE, show_header=True, title=f"insightloop inspect — {self.run_dir}")
        table.add_column("command", style="bold cyan", ratio=3)
        table.add_column("what it shows", ratio=2)
        for usage, summary in COMMANDS.values():
            table.add_row(usage, summary)
        return table

    def cmd_quit(self, argv: list[str]) -> RenderableType:
        parse("quit", argv)
        return Text("bye")

    # ---- ids ------------------------------------------------------------------------------
    def resolve_insight(self, key: str) -> Insight:
        """An insight by id, or by a unique id prefix."""
        found = _get_or_none(self.store.get, key)
        if found is not None:
            return found
        matches = [i for i in self.store.list_insights(status=None, sort="recent") if i.id.startswith(key)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            raise CommandError(f"insight id {key!r} is ambiguous ({len(matches)} match); type more of it")
        raise CommandError(f"no insight {key!r}; 'insights --status all' lists them")

    def resolve_episode(self, key: str) -> Episode:
        """An episode by id, or by a unique id prefix."""
        found = _get_or_none(self.store.get_episode, key)
        if found is None:
            matches = [e for e in self.store.list_episodes() if e.id.startswith(key)]
            if len(matches) > 1:
                raise CommandError(f"episode id {key!r} is ambiguous ({len(matches)} match); type more of it")
            if not matches:
                raise CommandError(f"no episode {key!r}; 'episodes' lists them")
            found = matches[0]
        return found if isinstance(found, Episode) else Episode.model_validate(found)

    # ---- insights -------------------------------------------------------------------------
    def cmd_insights(self, argv: list[str]) -> RenderableType:
        a = parse("insights", argv)
        status = None if a.status == "all" else a.status
        rows = self.store.list_insights(status=status, sort=a.sort, limit=a.limit)
        if not rows:
            return message("no insights yet" + (f" with status {status}" if status else ""), "yellow")
        return views_insights.insight_table(rows, f"insights (sorted by {a.sort}, memory v{self.store.version})")

    def cmd_insight(self, argv: list[str]) -> RenderableType:
        ins = self.resolve_insight(parse("insight", argv).id)
        history = [{**ev.payload, "version": ev.version, "ts": ev.ts}  # credit events, oldest first
                   for ev in self.store.events(since_version=0)
                   if ev.kind == "credit" and ins.id in ev.payload.get("insight_ids", [])]
        sources = {ep_id: _get_or_none(self.store.get_episode, ep_id) for ep_id in ins.source_episodes}
        folds = [(m.settled or m.created, m.index) for m in checkpoints.list_checkpoints(self.run_dir)
                 if m.status == "accepted"]
        return views_insights.insight_detail(ins, history, self.store.task_stats(ins.id), sources, folds)

    def cmd_search(self, argv: list[str]) -> RenderableType:
        a = parse("search", argv)
        query = " ".join(a.text)
        hits = self.store.search(query, a.k)
        if not hits:
            return message("no insights to search yet", "yellow")
        return views_insights.insight_table([ins for ins, _ in hits], f"insights nearest to {query!r}",
                                            scores=[score for _, score in hits])

    # ---- episodes -------------------------------------------------------------------------
    def cmd_episodes(self, argv: list[str]) -> RenderableType:
        a = parse("episodes", argv)
        rows = self.store.list_episodes(failed_only=a.failed, limit=a.limit)[::-1]  # newest first
        if not rows:
            return message("no episodes" + (" failed" if a.failed else " yet"), "yellow")
        title = ("failed episodes" if a.failed else "episodes") + f" (newest first, up to {a.limit})"
        return views_episodes.episodes_table(rows, title)

    def cmd_episode(self, argv: list[str]) -> RenderableType:
        a = parse("episode", argv)
        ep = self.resolve_episode(a.id)
        if a.node is None:
            return views_episodes.episode_view(ep)
        if not 0 <= a.node < len(ep.tree.nodes):
            raise CommandError(f"episode {ep.id} has nodes 0..{len(ep.tree.nodes) - 1}; no node {a.node}")
        return views_episodes.node_detail(ep, a.node)

    # ---- versions, curve, budget, checkpoints ---------------------------------------------
    def cmd_versions(self, argv: list[str]) -> RenderableType:
        a = parse("versions", argv)
        rows = list(self.store.versions())
        if not rows:
            return message("the memory has no versions yet", "yellow")
        return views_run.versions_table(rows, self.store.version, a.limit)

    def cmd_diff(self, argv: list[str]) -> RenderableType:
        a = parse("diff", argv)
        current = self.store.version
        for v in (a.v1, a.v2):
            if v < 0 or v > current:
                raise CommandError(f"version {v} does not exist (the memory is at v{current})")
        return views_insights.diff_table(self.store.diff(a.v1, a.v2), a.v1, a.v2)

    def cmd_curve(self, argv: list[str]) -> RenderableType:
        a = parse("curve", argv)
        if a.window < 1:
            raise CommandError("curve: --window must be at least 1")
        png = Path(a.png).expanduser() if a.png else None
        if png is not None and not png.parent.is_dir():  # a typo in the path must not create folders
            raise CommandError(f"curve: directory does not exist: {png.parent}")
        # Summaries, not episodes: the curve needs three numbers per episode, not its search tree.
        graded = [e for e in self.store.episode_summaries() if e.reward is not None]
        # A daemon's answers (given before it learns from each task) are its online accuracy.
        answers = [e for e in graded if e.phase == "answer"]
        points = [EpisodePoint(finished=e.finished or e.started, correct=e.correct,
                               with_insights=e.insights_used > 0) for e in (answers or graded)]
        if not points:
            return message("no episodes yet: nothing to plot", "yellow")
        curve = learning_curve(points, window=a.window)
        if png is None:
            return views_run.curve_panel(curve)
        return Group(views_run.curve_panel(curve), message(f"wrote {save_curve_png(curve, png)}"))

    def cmd_budget(self, argv: list[str]) -> RenderableType:
        parse("budget", argv)
        return views_run.budget_table(self.store.episode_summaries(), _read_json(self.run_dir / "status.json"))

    def cmd_checkpoints(self, argv: list[str]) -> RenderableType:
        parse("checkpoints", argv)
        manifests = checkpoints.list_checkpoints(self.run_dir)
        if not manifests:
            return message("no checkpoints: no fold has run in this run directory", "yellow")
        serving = checkpoints.current(self.run_dir)
        return views_run.checkpoints_table(manifests, serving.name if serving is not None else None)

    # ---- curation -------------------------------------------------------------------------
    def _curate(self, action: Callable[[Any], Any]) -> int:
        """Run one change on a briefly opened writer; returns the new memory version."""
        if self.writer is None:
            raise CommandError("this console is read-only (no writer available for this run directory)")
        with self.writer() as store:
            action(store)
            return int(store.version)

    def cmd_approve(self, argv: list[str]) -> RenderableType:
        return self._set_status("approve", argv, "active")

    def cmd_reject(self, argv: list[str]) -> RenderableType:
        return self._set_status("reject", argv, "retired")

    def _set_status(self, name: str, argv: list[str], status: str) -> RenderableType:
        a = parse(name, argv)
        ins = self.resolve_insight(a.id)
        reason = " ".join(a.reason) or f"{name}d in the console"
        if ins.status == status:
            return message(f"insight {ins.id} is already {status}; nothing changed", "yellow")
        version = self._curate(lambda s: s.set_status(ins.id, status, reason))
        return message(f"insight {ins.id}: {ins.status} -> {status} ({reason}); memory now at v{version}")

    def cmd_edit(self, argv: list[str]) -> RenderableType:
        a = parse("edit", argv)
        ins = self.resolve_insight(a.id)
        text = " ".join(a.text).strip()
        if text == ins.text:
            return message(f"insight {ins.id} already has that text; nothing changed", "yellow")
        version = self._curate(lambda s: s.edit(ins.id, text))
        return message(f"insight {ins.id} edited; memory now at v{version} (see: diff {version - 1} {version})")

    # ---- completion -----------------------------------------------------------------------
    def complete(self, line: str, text: str) -> list[str]:
        """Completions for the word `text` at the end of `line` (command names, then ids and flags)."""
        words = line.split()
        if not words or (len(words) == 1 and not line.endswith(" ")):
            return sorted(c for c in COMMANDS if c.startswith(text))
        name = words[0]
        options = option_flags(name)
        if name in ID_COMMANDS:
            options += [i.id for i in self.store.list_insights(status=None, sort="recent", limit=500)]
        elif name == "episode":
            options += [e.id for e in self.store.list_episodes(limit=200)]  # the 200 newest
        elif name == "help":
            options += list(COMMANDS)
        return sorted(o for o in set(options) if o.startswith(text))


def _read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from `path`; None when the file is absent, an `error` entry when unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"cannot read {path.name}: {e}"}
    return data if isinstance(data, dict) else {"value": data}
