"""Renderers of insights: the insight table (shared with `insightloop insights`), one insight in
full (header, utility history, per-task effect, provenance, the contrast pair), and memory diffs.

Pure functions of records; the console's commands fetch them. Insight texts are `Text`, never
markup, so a bracket in a text shows as written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from insightloop.agent.learn.pairs import steps_of
from insightloop.apps.console.views import (
    clip,
    compact,
    fmt,
    message,
    reward_text,
    status_style,
    utility_text,
    when,
)
from insightloop.core.episode import Episode, Trajectory
from insightloop.memory.records import Insight, MemoryDiff, TaskStats
from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

TEXT_CHARS = 90


def insight_table(rows: Sequence[Insight], title: str, scores: Sequence[float] | None = None,
                  text_chars: int | None = TEXT_CHARS) -> Table:
    """One row per insight: id, kind, status, uses, utility with its 95% interval, text.

    `scores` (a search's similarities) add a first column; `text_chars=None` shows whole texts.
    """
    table = Table(title=title, box=box.SIMPLE_HEAD)
    if scores is not None:
        table.add_column("score", justify="right", no_wrap=True)
    table.add_column("id", style="cyan", no_wrap=True, min_width=13)
    for col in ("kind", "status"):
        table.add_column(col)
    for col in ("uses", "utility", "95% CI"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("text", ratio=1, overflow="fold")
    for i, ins in enumerate(rows):
        lo, hi = ins.utility_ci
        text = ins.text if text_chars is None else clip(ins.text, text_chars)
        cells = [ins.id, ins.kind, Text(ins.status, style=status_style(ins.status)), str(ins.uses),
                 utility_text(ins.utility, lo, hi), Text(f"[{fmt(lo)}, {fmt(hi)}]"), Text(text)]
        table.add_row(*([f"{scores[i]:.3f}"] if scores is not None else []), *cells)
    return table


def insight_detail(ins: Insight, history: list[dict[str, Any]], stats: list[TaskStats],
                   sources: Mapping[str, Episode | None], folds: Sequence[tuple[float, int]] = ()) -> Group:
    """One insight in full: header, utility history (with the accepted weight folds `folds`, as (time,
    checkpoint), marked in it), effect per task, provenance, contrast pair."""
    parts: list[RenderableType] = [insight_header(ins), history_table(history, ins.family, folds),
                                   effect_table(stats), provenance_table(ins, sources)]
    contrast = contrast_from_meta(ins.meta)
    if contrast is not None:
        parts.append(contrast_table(*contrast))
        parts.append(analysis_grid(ins.meta))
    else:
        parts.append(message("no contrast pair recorded for this insight", "dim"))
    return Group(*parts)


def insight_header(ins: Insight) -> Panel:
    lo, hi = ins.utility_ci
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    grid.add_row("kind", ins.kind)
    grid.add_row("status", Text(ins.status + ("  (absorbed into weights)" if ins.absorbed else ""),
                                style=status_style(ins.status)))
    grid.add_row("applies when", ins.applies_when or "-")
    grid.add_row("utility", Text.assemble(utility_text(ins.utility, lo, hi),
                                          f"  95% CI [{fmt(lo)}, {fmt(hi)}]  over {ins.uses} uses"))
    grid.add_row("model", ins.model or "-")
    grid.add_row("created", f"{when(ins.created)}  (memory v{ins.version})")
    return Panel(Group(Text(ins.text, style="bold"), Text(""), grid), title=f"insight {ins.id}",
                 border_style="cyan")


def history_table(history: list[dict[str, Any]], family: str | None = None,
                  folds: Sequence[tuple[float, int]] = ()) -> RenderableType:
    """The credit events that touched an insight, oldest first, with the running mean credit. Each
    accepted fold (time, checkpoint) is a marked row where it happened: credit after it was earned
    against the new weights, and the caption gives the mean since the last one."""
    if not history:
        return message("no credit yet: the insight has not been used in a credited episode", "dim")
    table = Table(title="utility history (credit events)", box=box.SIMPLE_HEAD)
    for col in ("version", "task", "episode", "reward", "baseline", "credit", "running mean"):
        text_col = col in ("task", "episode")
        table.add_column(col, justify="left" if text_col else "right",
                         overflow="fold" if text_col else "ellipsis")
    pending = sorted(folds)
    total, since = 0.0, []
    for n, h in enumerate(history, start=1):
        while pending and float(h.get("ts", 0.0)) > pending[0][0]:
            _fold_row(table, pending.pop(0)[1])
            since = []
        delta = credit_delta(h)
        total += delta
        since.append(delta)
        task = str(h.get("task_id", "-"))
        if family and task.startswith(family + "/"):
            task = task[len(family) + 1:]  # the family is in the insight's header
        table.add_row(str(h.get("version", "-")), task, str(h.get("episode_id", "-")),
                      fmt(h.get("reward"), ".2f"), fmt(h.get("baseline"), ".2f"),
                      Text(fmt(delta), style="green" if delta > 0 else "red" if delta < 0 else ""),
                      fmt(total / n))
    for _, index in pending:
        _fold_row(table, index)
        since = []
    if folds:
        last = max(folds)[1]
        table.caption = (f"since the last fold (checkpoint {last}): "
                         + (f"mean credit {fmt(sum(since) / len(since))} over {len(since)} uses" if since
                            else "not used yet"))
    return table


def _fold_row(table: Table, index: int) -> None:
    """A marked row: the weights changed here (an accepted fold)."""
    mark = Text(f"── fold: checkpoint {index} serves from here ──", style="bold magenta")
    table.add_row(Text("fold", style="bold magenta"), mark, "", "", "", "", "")


def credit_delta(h: dict[str, Any]) -> float:
    if h.get("delta") is not None:
        return float(h["delta"])
    return float(h.get("reward", 0.0)) - float(h.get("baseline", 0.0))


def effect_table(stats: list[TaskStats]) -> RenderableType:
    """Per task: uses there, solved, and the mean credit (reward − baseline): helped > 0 > hurt."""
    if not stats:
        return Text("")
    table = Table(title="where it helped or hurt (per task)", box=box.SIMPLE_HEAD)
    for col in ("task", "uses", "solved", "mean credit", "effect"):
        table.add_column(col, justify="left" if col == "task" else "right")
    for st in sorted(stats, key=lambda st: (-st.utility, st.task_id)):
        mean = st.utility
        effect = Text("helped", "green") if mean > 0 else Text("hurt", "red") if mean < 0 else Text("neutral")
        table.add_row(st.task_id, str(st.uses), str(st.successes), fmt(mean), effect)
    return table


def provenance_table(ins: Insight, sources: Mapping[str, Episode | None]) -> RenderableType:
    """The episodes the insight came from; `sources` maps each id to its episode (None: not stored)."""
    episodes, tasks = list(ins.source_episodes), list(ins.source_tasks)
    if not episodes:
        return message("no source episode recorded", "dim")
    table = Table(title="where it came from", box=box.SIMPLE_HEAD)
    table.add_column("episode", style="cyan", no_wrap=True)
    table.add_column("task")
    table.add_column("reward", justify="right")
    for i, ep_id in enumerate(episodes):
        ep = sources.get(ep_id)
        task = tasks[i] if i < len(tasks) else (ep.task.id if ep is not None else "-")
        table.add_row(ep_id, task, reward_text(ep) if ep is not None else Text("(not stored)", "dim"))
    return table


def analysis_grid(meta: dict[str, Any]) -> RenderableType:
    """The analyst's reading of the pair, when the loop recorded it."""
    fields = (("step critique", "step_critique"), ("strategic pivot", "strategic_pivot"),
              ("success pattern", "success_pattern"), ("failure mode", "failure_mode"))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    for label, key in fields:
        if meta.get(key):
            grid.add_row(label, clip(str(meta[key]), 400))
    return grid if grid.row_count else Text("")


def as_steps(value: Any) -> list[str] | None:
    """A trajectory stored in meta as a `Trajectory` dict, a list of steps, or plain text."""
    if isinstance(value, dict) and "text" in value:
        return steps_of(Trajectory.model_validate({"reward": 0.0, **value}))
    if isinstance(value, list):
        return [str(s) for s in value]
    if isinstance(value, str) and value.strip():
        return [line.strip() for line in value.splitlines() if line.strip()]
    return None


def contrast_from_meta(meta: dict[str, Any]) -> tuple[list[str], list[str], int, str] | None:
    """(better attempt's lines, worse attempt's lines, index of the first differing line, title).

    The loop records the pair's texts and its divergence step (1-based, in tree steps); the texts
    are shown line by line and the first line where they differ is the one highlighted.
    """
    pair = meta.get("pair") if isinstance(meta.get("pair"), dict) else meta
    pos = as_steps(pair.get("positive", pair.get("anchor")))
    neg = as_steps(pair.get("negative"))
    if pos is None or neg is None:
        return None
    differ = (i for i, (x, y) in enumerate(zip(pos, neg, strict=False)) if x.split() != y.split())
    at = next(differ, min(len(pos), len(neg)))
    kind = str(pair.get("pair_kind", pair.get("kind", "contrast")))
    step = pair.get("divergence_step", pair.get("divergence"))
    title = f"the contrast pair that produced it ({kind} pair"
    title += f"; they diverge at step {step})" if step is not None else ")"
    return pos, neg, at, title


def contrast_table(pos: list[str], neg: list[str], at: int, title: str) -> Table:
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
        table.add_row(f"{marker}{i + 1}", Text(clip(left, 240), style=style),
                      Text(clip(right, 240), style=style))
    return table


def diff_table(diff: MemoryDiff, v1: int, v2: int) -> RenderableType:
    """One row per changed field of each insight: what it was at v1 and what it is at v2."""
    if not (diff.added or diff.removed or diff.changed):
        return message(f"no insight changes between v{v1} and v{v2} ({len(diff.events)} events)", "yellow")
    table = Table(title=f"memory changes v{v1} → v{v2} ({len(diff.events)} events)", box=box.SIMPLE_HEAD)
    table.add_column("change", no_wrap=True)
    table.add_column("insight", style="cyan", no_wrap=True)
    table.add_column("field")
    table.add_column(f"at v{v1}", ratio=1)
    table.add_column(f"at v{v2}", ratio=1)
    for ins in diff.added:
        table.add_row(Text("added", "green"), ins.id, "", "", Text(f"[{ins.status}] {clip(ins.text, 110)}"))
    for ins in diff.removed:
        table.add_row(Text("removed", "red"), ins.id, "", Text(f"[{ins.status}] {clip(ins.text, 110)}"), "")
    for ch in diff.changed:
        for i, (name, (before, after)) in enumerate(sorted(ch.fields.items())):
            if isinstance(before, dict) and isinstance(after, dict):  # meta: only the keys that changed
                keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
                before, after = ({k: d[k] for k in keys if k in d} for d in (before, after))
            table.add_row(Text("modified", "yellow") if i == 0 else "", ch.id if i == 0 else "", name,
                          Text(clip(compact(before), 110)), Text(clip(compact(after), 110)))
    return table
