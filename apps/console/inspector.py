"""The interactive console (`insightloop inspect`): what was learned, why, and whether it helps.

`Inspector` is the command layer: `execute(line)` parses one command line and returns a rich
renderable, so it is testable without a terminal. It reads the run directory through a read-only
`MemoryStore` (safe while a daemon writes) and opens a writer connection only for the curation
commands (approve, reject, edit), briefly. `run_shell` is the interactive loop: readline completion
and history on a TTY, plain line input otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from insightloop.apps.console.curve import Curve, EpisodePoint, learning_curve, save_curve_png
from insightloop.core.episode import Episode, Node, Trajectory
from insightloop.core.task import Task
from insightloop.memory.records import Insight, MemoryDiff, MemoryEvent, TaskStats
from rich import box
from rich.console import Console, Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

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
ID_COMMANDS = {"insight", "approve", "reject", "edit"}
STEP_CHARS = 72
TREE_NODE_LIMIT = 400


class CommandError(Exception):
    """A user-facing error (bad arguments, unknown id): shown as one line, never a traceback."""


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
    def versions(self) -> list[MemoryEvent]: ...
    def events(self, since_version: int = 0) -> list[MemoryEvent]: ...
    def diff(self, v1: int, v2: int) -> MemoryDiff: ...
    def task_stats(self, insight_id: str) -> list[TaskStats]: ...


WriterFactory = Callable[[], AbstractContextManager[Any]]


class _Parser(argparse.ArgumentParser):
    """argparse that raises `CommandError` instead of printing usage and exiting the process."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise CommandError(f"{self.prog}: {message}  (usage: {COMMANDS[self.prog][0]})")


def _parser(name: str) -> _Parser:
    return _Parser(prog=name, add_help=False)


def _clip(text: str, n: int = STEP_CHARS) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def _when(ts: float | None, short: bool = False) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def _clock_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def _fmt(x: float | None, spec: str = "+.2f") -> str:
    return "-" if x is None else format(x, spec)


class ErrorText(Text):
    """The rendering of a failed command (so callers can tell failure from output)."""


def _message(text: str, style: str = "green") -> Text:
    return ErrorText(text, style=style) if style == "red" else Text(text, style=style)


class Inspector:
    """The command layer: one method per command, each returning a rich renderable."""

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
            return _message(f"cannot parse that line: {e}", "red")
        if not argv:
            return Text("")
        name = argv[0].lower()
        handler = getattr(self, f"cmd_{name}", None) if name in COMMANDS else None
        if handler is None:
            return _message(f"unknown command {argv[0]!r}; type 'help' for the list", "red")
        try:
            return handler(argv[1:])
        except CommandError as e:
            return _message(str(e), "red")

    def cmd_help(self, argv: list[str]) -> RenderableType:
        if argv:
            if argv[0] not in COMMANDS:
                raise CommandError(f"no command {argv[0]!r}; type 'help' for the list")
            usage, summary = COMMANDS[argv[0]]
            return Text.assemble((usage, "bold"), "\n  ", summary)
        table = Table(box=box.SIMPLE, show_header=True, title=f"insightloop inspect — {self.run_dir}")
        table.add_column("command", style="bold cyan", ratio=3)
        table.add_column("what it shows", ratio=2)
        for usage, summary in COMMANDS.values():
            table.add_row(usage, summary)
        return table

    def cmd_quit(self, argv: list[str]) -> RenderableType:
        return Text("bye")

    # ---- ids ------------------------------------------------------------------------------
    def resolve_insight(self, key: str) -> Insight:
        """An insight by id, or by a unique id prefix."""
        found = self._get_or_none(self.store.get, key)
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
        found = self._get_or_none(self.store.get_episode, key)
        if found is None:
            matches = [e for e in self.store.list_episodes() if e.id.startswith(key)]
            if len(matches) > 1:
                raise CommandError(f"episode id {key!r} is ambiguous ({len(matches)} match); type more of it")
            if not matches:
                raise CommandError(f"no episode {key!r}; 'episodes' lists them")
            found = matches[0]
        return found if isinstance(found, Episode) else Episode.model_validate(found)

    @staticmethod
    def _get_or_none(getter: Callable[[str], Any], key: str) -> Any:
        try:
            return getter(key)
        except KeyError:
            return None

    # ---- insights -------------------------------------------------------------------------
    def cmd_insights(self, argv: list[str]) -> RenderableType:
        p = _parser("insights")
        p.add_argument("--sort", choices=["utility", "uses", "recent"], default="utility")
        p.add_argument("--status", choices=["active", "retired", "pending", "all"], default="all")
        p.add_argument("--limit", type=int, default=50)
        a = p.parse_args(argv)
        status = None if a.status == "all" else a.status
        rows = self.store.list_insights(status=status, sort=a.sort, limit=a.limit)
        title = f"insights (sorted by {a.sort}, memory v{self.store.version})"
        table = Table(title=title, box=box.SIMPLE_HEAD)
        for col, kw in (("id", {"style": "cyan", "no_wrap": True}), ("kind", {}), ("status", {}),
                        ("uses", {"justify": "right"}), ("utility", {"justify": "right"}),
                        ("95% CI", {"justify": "right"}), ("text", {"ratio": 1})):
            table.add_column(col, **kw)
        for ins in rows:
            lo, hi = ins.utility_ci
            status_text = Text(ins.status, style=_status_style(ins.status))
            table.add_row(ins.id, ins.kind, status_text, str(ins.uses), _utility_text(ins.utility, lo, hi),
                          f"[{_fmt(lo)}, {_fmt(hi)}]", _clip(ins.text, 90))
        if not rows:
            return _message("no insights yet" + (f" with status {status}" if status else ""), "yellow")
        return table

    def cmd_insight(self, argv: list[str]) -> RenderableType:
        p = _parser("insight")
        p.add_argument("id")
        ins = self.resolve_insight(p.parse_args(argv).id)
        parts: list[RenderableType] = [self._insight_header(ins)]
        parts.append(_history_table(self._credit_history(ins.id), ins.family))
        parts.append(_effect_table(self.store.task_stats(ins.id)))
        parts.append(self._provenance(ins))
        contrast = _contrast_from_meta(ins.meta)
        if contrast is not None:
            parts.append(_contrast_table(*contrast))
            parts.append(_analysis_grid(ins.meta))
        else:
            parts.append(_message("no contrast pair recorded for this insight", "dim"))
        return Group(*parts)

    def _insight_header(self, ins: Insight) -> Panel:
        lo, hi = ins.utility_ci
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("kind", ins.kind)
        grid.add_row("status", Text(ins.status + ("  (absorbed into weights)" if ins.absorbed else ""),
                                    style=_status_style(ins.status)))
        grid.add_row("applies when", ins.applies_when or "-")
        grid.add_row("utility", Text.assemble(_utility_text(ins.utility, lo, hi),
                                              f"  95% CI [{_fmt(lo)}, {_fmt(hi)}]  over {ins.uses} uses"))
        grid.add_row("model", ins.model or "-")
        grid.add_row("created", f"{_when(ins.created)}  (memory v{ins.version})")
        return Panel(Group(Text(ins.text, style="bold"), Text(""), grid), title=f"insight {ins.id}",
                     border_style="cyan")

    def _credit_history(self, insight_id: str) -> list[dict[str, Any]]:
        """Credit events that touched this insight, oldest first."""
        return [{**ev.payload, "version": ev.version, "ts": ev.ts}
                for ev in self.store.events(since_version=0)
                if ev.kind == "credit" and insight_id in ev.payload.get("insight_ids", [])]

    def _provenance(self, ins: Insight) -> RenderableType:
        table = Table(title="where it came from", box=box.SIMPLE_HEAD)
        table.add_column("episode", style="cyan", no_wrap=True)
        table.add_column("task")
        table.add_column("reward", justify="right")
        episodes = list(ins.source_episodes)
        tasks = list(ins.source_tasks)
        for i, ep_id in enumerate(episodes):
            ep = self._get_or_none(self.store.get_episode, ep_id)
            task = tasks[i] if i < len(tasks) else (ep.task.id if ep is not None else "-")
            table.add_row(ep_id, task, _reward_text(ep) if ep is not None else Text("(not stored)", "dim"))
        if not episodes:
            return _message("no source episode recorded", "dim")
        return table

    def cmd_search(self, argv: list[str]) -> RenderableType:
        p = _parser("search")
        p.add_argument("text", nargs="+")
        p.add_argument("--k", type=int, default=10)
        a = p.parse_args(argv)
        query = " ".join(a.text)
        hits = self.store.search(query, a.k)
        if not hits:
            return _message("no insights to search yet", "yellow")
        table = Table(title=f"insights nearest to {query!r}", box=box.SIMPLE_HEAD)
        for col in ("score", "id", "status", "utility", "text"):
            table.add_column(col, no_wrap=col in ("id", "score"))
        for ins, score in hits:
            table.add_row(f"{score:.3f}", ins.id, ins.status, _fmt(ins.utility), _clip(ins.text, 90))
        return table

    # ---- episodes -------------------------------------------------------------------------
    def cmd_episodes(self, argv: list[str]) -> RenderableType:
        p = _parser("episodes")
        p.add_argument("--failed", action="store_true")
        p.add_argument("--limit", type=int, default=50)
        a = p.parse_args(argv)
        rows = self.store.list_episodes(failed_only=a.failed, limit=a.limit)[::-1]  # newest first
        if not rows:
            return _message("no episodes" + (" failed" if a.failed else " yet"), "yellow")
        title = ("failed episodes" if a.failed else "episodes") + f" (newest first, up to {a.limit})"
        table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False,
                      caption="used: insights in the prompt")
        for col in ("id", "task", "phase", "reward", "answer", "used", "rollouts", "tokens", "finished"):
            numeric = col in ("reward", "used", "rollouts", "tokens")
            table.add_column(col, overflow="fold", style="cyan" if col == "id" else None,
                             justify="right" if numeric else "left")
        for ep in rows:
            table.add_row(ep.id, _short_task(ep.task), str(ep.meta.get("phase", "-")), _reward_text(ep),
                          _clip(ep.answer or "-", 12),
                          str(len(ep.insights_used)), str(ep.rollouts),
                          str(ep.prompt_tokens + ep.completion_tokens), _clock_time(ep.finished))
        return table

    def cmd_episode(self, argv: list[str]) -> RenderableType:
        p = _parser("episode")
        p.add_argument("id")
        p.add_argument("--node", type=int, default=None)
        a = p.parse_args(argv)
        ep = self.resolve_episode(a.id)
        if a.node is not None:
            return _node_detail(ep, a.node)
        return Group(self._episode_header(ep), _episode_tree(ep))

    def _episode_header(self, ep: Episode) -> Panel:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row("task", f"{ep.task.id}  ({ep.task.family}, verifier {ep.task.verifier})")
        grid.add_row("prompt", _clip(ep.task.prompt, 400))
        grid.add_row("reference", ep.task.answer or "-")
        grid.add_row("answer", Text.assemble(ep.answer or "-", "  ", _reward_text(ep)))
        grid.add_row("search", f"{ep.strategy}, {ep.rollouts} rollouts, {ep.prompt_tokens} prompt + "
                               f"{ep.completion_tokens} completion tokens, {ep.seconds:.1f}s")
        used = Text("none") if not ep.insights_used else Text("\n").join(
            Text.assemble((i, "cyan"), "  ", _clip(t, 90)) for i, t in _used_insights(ep))
        grid.add_row("insights used", used)
        return Panel(grid, title=f"episode {ep.id}", border_style="cyan")

    # ---- versions -------------------------------------------------------------------------
    def cmd_versions(self, argv: list[str]) -> RenderableType:
        p = _parser("versions")
        p.add_argument("--limit", type=int, default=40)
        a = p.parse_args(argv)
        rows = list(self.store.versions())
        if not rows:
            return _message("the memory has no versions yet", "yellow")
        table = Table(title=f"memory versions (current v{self.store.version})", box=box.SIMPLE_HEAD)
        for col in ("version", "when", "change", "details"):
            table.add_column(col, justify="right" if col == "version" else "left")
        for ev in rows[-a.limit:]:
            table.add_row(str(ev.version), _when(ev.ts), ev.kind, _clip(ev.summary, 90))
        if len(rows) > a.limit:
            table.caption = f"the last {a.limit} of {len(rows)}; versions --limit N shows more"
        return table

    def cmd_diff(self, argv: list[str]) -> RenderableType:
        p = _parser("diff")
        p.add_argument("v1", type=int)
        p.add_argument("v2", type=int)
        a = p.parse_args(argv)
        current = self.store.version
        for v in (a.v1, a.v2):
            if v < 0 or v > current:
                raise CommandError(f"version {v} does not exist (the memory is at v{current})")
        return _diff_table(self.store.diff(a.v1, a.v2), a.v1, a.v2)

    # ---- curve and budget -----------------------------------------------------------------
    def _all_episodes(self) -> list[Episode]:
        return list(self.store.list_episodes(failed_only=False, limit=None))

    def cmd_curve(self, argv: list[str]) -> RenderableType:
        p = _parser("curve")
        p.add_argument("--window", type=int, default=20)
        p.add_argument("--png", default=None)
        a = p.parse_args(argv)
        if a.window < 1:
            raise CommandError("curve: --window must be at least 1")
        points = [EpisodePoint(finished=e.finished or e.started, correct=e.correct,
                               with_insights=bool(e.insights_used)) for e in self._all_episodes()
                  if e.reward is not None]
        if not points:
            return _message("no episodes yet: nothing to plot", "yellow")
        curve = learning_curve(points, window=a.window)
        parts: list[RenderableType] = [_curve_panel(curve)]
        if a.png:
            path = save_curve_png(curve, Path(a.png).expanduser())
            parts.append(_message(f"wrote {path}"))
        return Group(*parts)

    def cmd_budget(self, argv: list[str]) -> RenderableType:
        _parser("budget").parse_args(argv)
        episodes = self._all_episodes()
        table = Table(title="spend so far", box=box.SIMPLE_HEAD)
        table.add_column("source")
        table.add_column("item")
        table.add_column("value", justify="right")
        prompt = sum(e.prompt_tokens for e in episodes)
        completion = sum(e.completion_tokens for e in episodes)
        usd = sum(float(e.meta.get("usd", 0.0) or 0.0) for e in episodes)
        for item, value in (("episodes", len(episodes)), ("correct", sum(e.correct for e in episodes)),
                            ("rollouts", sum(e.rollouts for e in episodes)), ("prompt tokens", prompt),
                            ("completion tokens", completion), ("tokens", prompt + completion),
                            ("usd", f"{usd:.4f}"),
                            ("wall seconds", f"{sum(e.seconds for e in episodes):.1f}")):
            table.add_row("episodes", item, str(value))
        status = _read_json(self.run_dir / "status.json")
        for key, value in _status_rows(status or {}):
            table.add_row("status.json", key, value)
        if status is None:
            table.caption = "no status.json (no daemon has run here): totals come from the stored episodes"
        return table

    # ---- curation -------------------------------------------------------------------------
    def _curate(self, action: Callable[[Any], Any]) -> int:
        """Run one change on a briefly opened writer; returns the new memory version."""
        if self.writer is None:
            raise CommandError("this console is read-only (no writer available for this run directory)")
        with self.writer() as store:
            action(store)
            return int(store.version)

    def cmd_approve(self, argv: list[str]) -> RenderableType:
        return self._set_status(argv, "approve", "active")

    def cmd_reject(self, argv: list[str]) -> RenderableType:
        return self._set_status(argv, "reject", "retired")

    def _set_status(self, argv: list[str], name: str, status: str) -> RenderableType:
        p = _parser(name)
        p.add_argument("id")
        p.add_argument("reason", nargs="*")
        a = p.parse_args(argv)
        ins = self.resolve_insight(a.id)
        reason = " ".join(a.reason) or f"{name}d in the console"
        if ins.status == status:
            return _message(f"insight {ins.id} is already {status}; nothing changed", "yellow")
        version = self._curate(lambda s: s.set_status(ins.id, status, reason))
        return _message(f"insight {ins.id}: {ins.status} -> {status} ({reason}); memory now at v{version}")

    def cmd_edit(self, argv: list[str]) -> RenderableType:
        p = _parser("edit")
        p.add_argument("id")
        p.add_argument("text", nargs="+")
        a = p.parse_args(argv)
        ins = self.resolve_insight(a.id)
        text = " ".join(a.text).strip()
        if text == ins.text:
            return _message(f"insight {ins.id} already has that text; nothing changed", "yellow")
        version = self._curate(lambda s: s.edit(ins.id, text))
        return _message(f"insight {ins.id} edited; memory now at v{version} "
                        f"(see: diff {version - 1} {version})")

    # ---- checkpoints ----------------------------------------------------------------------
    def cmd_checkpoints(self, argv: list[str]) -> RenderableType:
        from insightloop.rl.checkpoints import current, list_checkpoints

        _parser("checkpoints").parse_args(argv)
        manifests = list_checkpoints(self.run_dir)
        if not manifests:
            return _message("no checkpoints: no fold has run in this run directory", "yellow")
        serving = current(self.run_dir)
        table = Table(title="weight folds (serving: " + (serving.name if serving else "the base model") + ")",
                      box=box.SIMPLE_HEAD)
        for col in ("#", "status", "method", "steps", "parent", "base model", "data", "metrics", "gate"):
            table.add_column(col, no_wrap=col in ("#", "status"))
        for m in manifests:
            name = str(m.index) + (" ◀" if serving is not None and serving.name == str(m.index) else "")
            table.add_row(name, Text(m.status, style=_status_style(m.status)),
                          m.method + (" +lora" if m.lora else ""), str(m.steps), _plain(m.parent),
                          _clip(m.base_model, 30), _compact(m.data_counts), _metrics_text(m.metrics),
                          _gate_text(m.gate))
        return table

    # ---- completion -----------------------------------------------------------------------
    def complete(self, line: str, text: str) -> list[str]:
        """Completions for the word `text` at the end of `line` (command names, then ids and flags)."""
        words = line.split()
        first = not words or (len(words) == 1 and not line.endswith(" "))
        if first:
            return sorted(c for c in COMMANDS if c.startswith(text))
        name = words[0]
        flags = [w.strip("[]").split()[0] for w in COMMANDS.get(name, ("", ""))[0].split(" [")[1:]]
        options = [f for f in flags if f.startswith("--")]
        if name in ID_COMMANDS:
            options += [i.id for i in self.store.list_insights(status=None, sort="recent", limit=500)]
        elif name == "episode":
            options += [e.id for e in self.store.list_episodes(limit=200)]  # the 200 newest
        elif name == "help":
            options += list(COMMANDS)
        return sorted(o for o in set(options) if o.startswith(text))


# ---- rendering helpers (pure functions of records) -----------------------------------------
def _status_style(status: str) -> str:
    return {"active": "green", "retired": "red", "pending": "yellow"}.get(status, "")


def _utility_text(u: float | None, lo: float | None, hi: float | None) -> Text:
    style = "green" if lo is not None and lo > 0 else "red" if hi is not None and hi < 0 else ""
    return Text(_fmt(u), style=style)


def _short_task(task: Task) -> str:
    """The task id without its family prefix (the family is in the episode view)."""
    prefix = task.family + "/"
    return task.id[len(prefix):] if task.id.startswith(prefix) and len(task.id) > len(prefix) else task.id


def _used_insights(ep: Episode) -> list[tuple[str, str]]:
    """(id, text) of the insights in the episode's prompt: the prompt holds texts, meta their ids."""
    ids = ep.meta.get("insight_ids") or []
    if len(ids) != len(ep.insights_used):
        ids = ["-"] * len(ep.insights_used)
    return list(zip(ids, ep.insights_used, strict=True))


def _reward_text(ep: Episode) -> Text:
    if ep.reward is None:
        return Text("unverified", style="dim")
    return Text(f"{ep.reward.score:.2f}", style="green" if ep.reward.correct else "red")


def _history_table(history: list[dict[str, Any]], family: str | None = None) -> RenderableType:
    if not history:
        return _message("no credit yet: the insight has not been used in a credited episode", "dim")
    table = Table(title="utility history (credit events)", box=box.SIMPLE_HEAD)
    for col in ("version", "task", "episode", "reward", "baseline", "credit", "running mean"):
        text_col = col in ("task", "episode")
        table.add_column(col, justify="left" if text_col else "right",
                         overflow="fold" if text_col else "ellipsis")
    total = 0.0
    for n, h in enumerate(history, start=1):
        delta = _credit_delta(h)
        total += delta
        task = str(h.get("task_id", "-"))
        if family and task.startswith(family + "/"):
            task = task[len(family) + 1:]  # the family is in the insight's header
        table.add_row(str(h.get("version", "-")), task,
                      str(h.get("episode_id", "-")), _fmt(h.get("reward"), ".2f"),
                      _fmt(h.get("baseline"), ".2f"),
                      Text(_fmt(delta), style="green" if delta > 0 else "red" if delta < 0 else ""),
                      _fmt(total / n))
    return table


def _credit_delta(h: dict[str, Any]) -> float:
    if h.get("delta") is not None:
        return float(h["delta"])
    return float(h.get("reward", 0.0)) - float(h.get("baseline", 0.0))


def _effect_table(stats: list[TaskStats]) -> RenderableType:
    """Per task: uses there, solved, and the mean credit (reward − baseline): helped > 0 > hurt."""
    if not stats:
        return Text("")
    table = Table(title="where it helped or hurt (per task)", box=box.SIMPLE_HEAD)
    for col in ("task", "uses", "solved", "mean credit", "effect"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for st in sorted(stats, key=lambda st: (-st.utility, st.task_id)):
        mean = st.utility
        effect = Text("helped", "green") if mean > 0 else Text("hurt", "red") if mean < 0 else Text("neutral")
        table.add_row(st.task_id, str(st.uses), str(st.successes), _fmt(mean), effect)
    return table


def _analysis_grid(meta: dict[str, Any]) -> RenderableType:
    """The analyst's reading of the pair, when the loop recorded it."""
    fields = (("step critique", "step_critique"), ("strategic pivot", "strategic_pivot"),
              ("success pattern", "success_pattern"), ("failure mode", "failure_mode"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, key in fields:
        if meta.get(key):
            grid.add_row(label, _clip(str(meta[key]), 400))
    return grid if grid.row_count else Text("")


def _as_steps(value: Any) -> list[str] | None:
    """A trajectory stored in meta as a `Trajectory` dict, a list of steps, or plain text."""
    from insightloop.agent.learn.pairs import steps_of

    if isinstance(value, dict) and "text" in value:
        return steps_of(Trajectory.model_validate({"reward": 0.0, **value}))
    if isinstance(value, list):
        return [str(s) for s in value]
    if isinstance(value, str) and value.strip():
        return [line.strip() for line in value.splitlines() if line.strip()]
    return None


def _contrast_from_meta(meta: dict[str, Any]) -> tuple[list[str], list[str], int, str] | None:
    """(better attempt's lines, worse attempt's lines, index of the first differing line, title).

    The loop records the pair's texts and its divergence step (1-based, in tree steps); the texts
    are shown line by line and the first line where they differ is the one highlighted.
    """
    pair = meta.get("pair") if isinstance(meta.get("pair"), dict) else meta
    pos = _as_steps(pair.get("positive", pair.get("anchor")))
    neg = _as_steps(pair.get("negative"))
    if pos is None or neg is None:
        return None
    differ = (i for i, (x, y) in enumerate(zip(pos, neg, strict=False)) if x.split() != y.split())
    at = next(differ, min(len(pos), len(neg)))
    kind = str(pair.get("pair_kind", pair.get("kind", "contrast")))
    step = pair.get("divergence_step", pair.get("divergence"))
    title = f"the contrast pair that produced it ({kind} pair"
    title += f"; they diverge at step {step})" if step is not None else ")"
    return pos, neg, at, title


def _contrast_table(pos: list[str], neg: list[str], at: int, title: str) -> Table:
    """Both attempts side by side, line by line; the first differing line is highlighted."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_lines=False)
    table.add_column("line", justify="right", style="dim")
    table.add_column("better attempt (verified)", ratio=1)
    table.add_column("worse attempt", ratio=1)
    for i in range(max(len(pos), len(neg))):
        left = pos[i] if i < len(pos) else ""
        right = neg[i] if i < len(neg) else ""
        style = "dim" if i < at else ("bold reverse yellow" if i == at else "")
        marker = "▶ " if i == at else ""
        table.add_row(f"{marker}{i + 1}", Text(_clip(left, 240), style=style),
                      Text(_clip(right, 240), style=style))
    return table


def _node_label(node: Node, best: set[int]) -> Text:
    reward = node.reward
    style = "green" if reward is not None and reward >= 1.0 else "red" if reward is not None else "dim"
    stats = f"#{node.id} n={node.visits} v={node.value:.2f} r={_fmt(reward, '.0f')}"
    label = Text.assemble((stats, style), "  ", _clip(node.step_text or "(empty step)", STEP_CHARS))
    if node.id in best:
        label.stylize("bold")
        label.append("  ★ chosen", style="bold yellow")
    return label


def _episode_tree(ep: Episode) -> RenderableType:
    """The MCTS tree as a rich Tree; steps truncated (`episode ID --node N` shows one in full)."""
    nodes = ep.tree.nodes
    best = set(ep.best.node_ids) if ep.best else set()
    root = Tree(Text(f"#0 root  n={nodes[0].visits} v={nodes[0].value:.2f}  ({len(nodes) - 1} steps)",
                     style="bold"))
    stack: list[tuple[Tree, int]] = [(root, c) for c in reversed(nodes[0].children)]
    shown = 0
    while stack and shown < TREE_NODE_LIMIT:
        parent, nid = stack.pop()
        branch = parent.add(_node_label(nodes[nid], best))
        shown += 1
        stack.extend((branch, c) for c in reversed(nodes[nid].children))
    if stack:
        root.add(Text(f"… {len(nodes) - 1 - shown} more nodes not shown", style="dim"))
    if len(nodes) == 1:
        root.add(Text(f"no tree steps ({ep.strategy}); {len(ep.trajectories)} sampled attempts", style="dim"))
    return root


def _node_detail(ep: Episode, node_id: int) -> RenderableType:
    if node_id < 0 or node_id >= len(ep.tree.nodes):
        raise CommandError(f"episode {ep.id} has nodes 0..{len(ep.tree.nodes) - 1}; no node {node_id}")
    node = ep.tree.nodes[node_id]
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("depth", str(node.depth))
    grid.add_row("parent", str(node.parent))
    grid.add_row("children", ", ".join(map(str, node.children)) or "-")
    grid.add_row("visits / value", f"{node.visits} / {node.value:.3f}")
    grid.add_row("reward", _fmt(node.reward, ".2f"))
    grid.add_row("parsed answer", node.parsed_answer or "-")
    grid.add_row("tokens", f"{node.prompt_tokens} prompt + {node.completion_tokens} completion")
    parts: list[RenderableType] = [grid, Panel(Text(node.step_text or "(root)"), title="this step")]
    if node_id:
        parts.append(Panel(Text(ep.tree.path_text(node_id)), title="path from the root", border_style="dim"))
    if node.rollout_text:
        parts.append(Panel(Text(node.rollout_text), title="rollout from here", border_style="dim"))
    return Panel(Group(*parts), title=f"episode {ep.id} · node {node_id}", border_style="cyan")


def _diff_table(diff: MemoryDiff, v1: int, v2: int) -> RenderableType:
    """One row per changed field of each insight: what it was at v1 and what it is at v2."""
    title = f"memory changes v{v1} → v{v2} ({len(diff.events)} events)"
    if not (diff.added or diff.removed or diff.changed):
        return _message(f"no insight changes between v{v1} and v{v2} ({len(diff.events)} events)", "yellow")
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("change", no_wrap=True)
    table.add_column("insight", style="cyan", no_wrap=True)
    table.add_column("field")
    table.add_column(f"at v{v1}", ratio=1)
    table.add_column(f"at v{v2}", ratio=1)
    for ins in diff.added:
        table.add_row(Text("added", "green"), ins.id, "", "", f"[{ins.status}] {_clip(ins.text, 110)}")
    for ins in diff.removed:
        table.add_row(Text("removed", "red"), ins.id, "", f"[{ins.status}] {_clip(ins.text, 110)}", "")
    for ch in diff.changed:
        for i, (name, (before, after)) in enumerate(sorted(ch.fields.items())):
            if isinstance(before, dict) and isinstance(after, dict):  # meta: only the keys that changed
                keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
                before, after = ({k: d[k] for k in keys if k in d} for d in (before, after))
            table.add_row(Text("modified", "yellow") if i == 0 else "", ch.id if i == 0 else "", name,
                          _clip(_compact(before), 110), _clip(_compact(after), 110))
    return table


def _curve_panel(curve: Curve) -> Panel:
    n = len(curve.overall)
    acc = line_chart([("with insights", curve.with_insights, "green", "●"),
                      ("without insights", curve.without_insights, "red", "○"),
                      ("all", list(curve.overall), "bright_black", "·")], 0.0, 1.0, height=10)
    lift = line_chart([("lift", curve.lift, "cyan", "▪")], -1.0, 1.0, height=5)
    summary = Table.grid(padding=(0, 3))
    for _ in range(4):
        summary.add_column()
    last = lambda xs: next((x for x in reversed(xs) if x is not None), None)  # noqa: E731
    summary.add_row(f"episodes: {n}",
                    f"with insights: {curve.n_with} (acc {_fmt(last(curve.with_insights), '.0%')})",
                    f"without: {curve.n_without} (acc {_fmt(last(curve.without_insights), '.0%')})",
                    Text(f"lift: {_fmt(curve.final_lift, '+.0%')}", style="bold cyan"))
    body = Group(Text(f"rolling accuracy (last {curve.window} of each group)", style="bold"), acc,
                 Text("lift = with − without", style="bold"), lift, summary)
    return Panel(body, title="learning curve", border_style="cyan")


def _bucket(values: Sequence[float | None], width: int) -> list[float | None]:
    """Fit a series to about `width` columns: a short one is stretched (each point repeated), a long
    one shrunk (each column shows the last defined value in its slice)."""
    if not values:
        return []
    if len(values) <= width:
        return [v for v in values for _ in range(width // len(values))]
    out: list[float | None] = []
    for c in range(width):
        chunk = values[c * len(values) // width: (c + 1) * len(values) // width]
        out.append(next((v for v in reversed(chunk) if v is not None), None))
    return out


def line_chart(series: list[tuple[str, Sequence[float | None], str, str]], lo: float, hi: float,
               height: int = 10, width: int = 60) -> Text:
    """A terminal line chart: one marker per column per series, y from `lo` (bottom) to `hi` (top)."""
    cols = max((len(_bucket(s, width)) for _, s, _, _ in series), default=0)
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * cols for _ in range(height)]
    for _, values, style, mark in series:
        for x, v in enumerate(_bucket(values, width)):
            if v is not None:
                row = round((hi - min(max(v, lo), hi)) / (hi - lo) * (height - 1))
                grid[row][x] = (mark, style)
    text = Text()
    for r, row in enumerate(grid):
        label = hi - r * (hi - lo) / (height - 1)
        text.append(f"{label:+5.0%} ┤" if lo < 0 else f"{label:5.0%} ┤", style="dim")
        for ch, style in row:
            text.append(ch, style=style)
        text.append("\n")
    text.append("      └" + "─" * cols + "\n", style="dim")
    n = max((len(s) for _, s, _, _ in series), default=0)
    text.append(f"       1{'episode':^{max(cols - 2 - len(str(n)), 0)}} {n}\n", style="dim")
    legend = Text("       ")
    for name, _, style, mark in series:
        legend.append(f"{mark} {name}   ", style=style)
    return text + legend


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as e:
        return {"error": f"cannot read {path.name}: {e}"}
    return data if isinstance(data, dict) else {"value": data}


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def _status_rows(status: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The daemon's status.json as spend rows: state, each budget window (used, cap, left), counters."""
    if "state" in status:
        yield "state", str(status["state"])
    budget = status.get("budget")
    for name, entry in (budget.items() if isinstance(budget, dict) else []):
        if isinstance(entry, dict) and "used" in entry:
            cap = entry.get("cap")
            cap = "" if cap is None else f" of {_plain(cap)}, {_plain(entry.get('left'))} left"
            yield f"{name} this {entry.get('window', 'window')}", _plain(entry["used"]) + cap
        elif not isinstance(entry, dict):
            yield f"budget.{name}", _plain(entry)
    counters = status.get("counters")
    for name, value in (counters.items() if isinstance(counters, dict) else []):
        yield f"tasks {name}", _plain(value)
    if status.get("accuracy") is not None:
        yield f"accuracy (last {status.get('accuracy_n', '?')})", _fmt(status["accuracy"], ".0%")


def _compact(data: Any) -> str:
    if not isinstance(data, dict):
        return _plain(data)
    return ", ".join(f"{k}={_plain(v) if not isinstance(v, dict) else _compact(v)}" for k, v in data.items())


def _gate_text(gate: dict[str, Any] | None) -> Text:
    """The gate's verdict and the held-out accuracy before → after."""
    if gate is None:
        return Text("not gated", style="dim")
    accepted = gate.get("accepted", gate.get("passed"))
    verdict = Text("accepted" if accepted else "rejected", style="green" if accepted else "red")
    old, new = gate.get("old_accuracy", gate.get("before")), gate.get("new_accuracy", gate.get("after"))
    if old is None or new is None:
        rest = {k: v for k, v in gate.items() if k not in ("accepted", "passed")}
        return verdict + Text(("  " + _compact(rest)) if rest else "")
    n = f" (n={gate['n']})" if "n" in gate else ""
    return verdict + Text(f"  {_fmt(old, '.2f')} → {_fmt(new, '.2f')}{n}")


def _metrics_text(metrics: dict[str, float]) -> str:
    """The few training metrics worth a column; the manifest keeps them all."""
    keys = [k for k in ("mean_loss", "train_loss", "loss", "reward", "mean_reward") if k in metrics][:2]
    return _compact({k: metrics[k] for k in keys or list(metrics)[:2]})


# ---- opening a run directory and the interactive loop --------------------------------------
def open_inspector(run_dir: Path, config_path: str | None = None) -> tuple[Inspector, Callable[[], None]]:
    """A read-only `Inspector` on a run directory, plus a function that closes it."""
    from insightloop.core.config import load_config
    from insightloop.memory.embed import make_embedder
    from insightloop.memory.store import MemoryStore

    run_dir = Path(run_dir).expanduser().resolve()
    if not (run_dir / "memory.sqlite").is_file():
        raise CommandError(f"{run_dir} is not a run directory (no memory.sqlite in it)")
    cfg = load_config(config_path).memory
    embedder = make_embedder(cfg.embedder)  # loads its model on first use: listing never waits for it
    store = MemoryStore.open(run_dir, embedder, cfg, readonly=True)

    def writer() -> AbstractContextManager[Any]:
        return MemoryStore.open(run_dir, embedder, cfg, readonly=False)

    return Inspector(run_dir, store, writer), store.close


def _history_path() -> Path:
    from insightloop.core.models import cache_dir

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
                line = _read_line("inspect> ", tty, console)
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


def inspect_main(run_dir: Path, commands: Sequence[str], config_path: str | None = None,
                 console: Console | None = None) -> int:
    """`insightloop inspect`: run the given commands and exit, or open the interactive console.

    Returns the process exit code: 0 on success, 1 when a command failed, 2 when the run directory
    cannot be opened.
    """
    if console is None:
        # Scripts piping the output get wide tables unless they ask otherwise (COLUMNS).
        wide = not sys.stdout.isatty() and "COLUMNS" not in os.environ
        console = Console(width=140 if wide else None)
    try:
        inspector, close = open_inspector(run_dir, config_path)
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
