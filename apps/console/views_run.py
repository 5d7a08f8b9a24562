"""Renderers of a run's history and spend: memory versions, the learning curve, the budget
(episode totals and the daemon's status.json), and the weight folds with their gate results.

Pure functions of records and already-read JSON.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from insightloop.apps.console.chart import line_chart
from insightloop.apps.console.curve import Curve
from insightloop.apps.console.views import clip, compact, fmt, plain, status_style, when
from insightloop.memory.records import MemoryEvent
from insightloop.memory.summaries import EpisodeSummary
from insightloop.rl.checkpoints import Manifest
from rich import box
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


def versions_table(events: list[MemoryEvent], current: int, limit: int) -> Table:
    """The last `limit` memory versions: when, what kind of change, its summary."""
    table = Table(title=f"memory versions (current v{current})", box=box.SIMPLE_HEAD)
    for col in ("version", "when", "change", "details"):
        table.add_column(col, justify="right" if col == "version" else "left")
    for ev in events[-limit:]:
        table.add_row(str(ev.version), when(ev.ts), ev.kind, clip(ev.summary, 90))
    if len(events) > limit:
        table.caption = f"the last {limit} of {len(events)}; versions --limit N shows more"
    return table


def _last(values: Sequence[float | None]) -> float | None:
    return next((x for x in reversed(values) if x is not None), None)


def curve_panel(curve: Curve) -> Panel:
    """Rolling accuracy with and without insights, the lift, and a one-line summary."""
    acc = line_chart([("with insights", curve.with_insights, "green", "●"),
                      ("without insights", curve.without_insights, "red", "○"),
                      ("all", list(curve.overall), "bright_black", "·")], 0.0, 1.0, height=10)
    lift = line_chart([("lift", curve.lift, "cyan", "▪")], -1.0, 1.0, height=5)
    summary = Table.grid(padding=(0, 3))
    for _ in range(4):
        summary.add_column()
    summary.add_row(f"episodes: {len(curve.overall)}",
                    f"with insights: {curve.n_with} (acc {fmt(_last(curve.with_insights), '.0%')})",
                    f"without: {curve.n_without} (acc {fmt(_last(curve.without_insights), '.0%')})",
                    Text(f"lift: {fmt(curve.final_lift, '+.0%')}", style="bold cyan"))
    body = Group(Text(f"rolling accuracy (last {curve.window} of each group)", style="bold"), acc,
                 Text("lift = with − without", style="bold"), lift, summary)
    return Panel(body, title="learning curve", border_style="cyan")


def budget_table(episodes: list[EpisodeSummary], status: dict[str, Any] | None) -> Table:
    """Spend summed over the stored episodes, then status.json's windows and counters (if any)."""
    table = Table(title="spend so far", box=box.SIMPLE_HEAD)
    table.add_column("source")
    table.add_column("item")
    table.add_column("value", justify="right")
    prompt = sum(e.prompt_tokens for e in episodes)
    completion = sum(e.completion_tokens for e in episodes)
    usd = sum(e.usd for e in episodes)
    for item, value in (("episodes", len(episodes)), ("correct", sum(e.correct for e in episodes)),
                        ("rollouts", sum(e.rollouts for e in episodes)), ("prompt tokens", prompt),
                        ("completion tokens", completion), ("tokens", prompt + completion),
                        ("usd", f"{usd:.4f}"), ("wall seconds", f"{sum(e.seconds for e in episodes):.1f}")):
        table.add_row("episodes", item, str(value))
    for key, value in status_rows(status or {}):
        table.add_row("status.json", key, value)
    if status is None:
        table.caption = "no status.json (no daemon has run here): totals come from the stored episodes"
    return table


def status_rows(status: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The daemon's status.json as spend rows: state, each budget window (used, cap, left), counters."""
    if "state" in status:
        yield "state", str(status["state"])
    budget = status.get("budget")
    for name, entry in (budget.items() if isinstance(budget, dict) else []):
        if isinstance(entry, dict) and "used" in entry:
            cap = entry.get("cap")
            cap = "" if cap is None else f" of {plain(cap)}, {plain(entry.get('left'))} left"
            yield f"{name} this {entry.get('window', 'window')}", plain(entry["used"]) + cap
        elif not isinstance(entry, dict):
            yield f"budget.{name}", plain(entry)
    counters = status.get("counters")
    for name, value in (counters.items() if isinstance(counters, dict) else []):
        yield f"tasks {name}", plain(value)
    if status.get("accuracy") is not None:
        yield f"accuracy (last {status.get('accuracy_n', '?')})", fmt(status["accuracy"], ".0%")


def checkpoints_table(manifests: list[Manifest], serving: str | None) -> Table:
    """One row per fold: status, method, steps, parent, data, metrics, gate, seconds; ◀ marks the one
    serving."""
    table = Table(title=f"weight folds (serving: {serving or 'the base model'})", box=box.SIMPLE_HEAD)
    for col in ("#", "status", "method", "steps", "parent", "base model", "data", "metrics", "gate", "seconds"):
        table.add_column(col, no_wrap=col in ("#", "status"), justify="right" if col == "seconds" else "left")
    for m in manifests:
        name = str(m.index) + (" ◀" if serving == str(m.index) else "")
        table.add_row(name, Text(m.status, style=status_style(m.status)),
                      m.method + (" +lora" if m.lora else ""), str(m.steps), plain(m.parent),
                      clip(m.base_model, 30), compact(m.data_counts), metrics_text(m.metrics), gate_text(m.gate),
                      fmt(m.seconds, ".0f"))
    return table


def gate_text(gate: dict[str, Any] | None) -> Text:
    """The gate's verdict and the held-out accuracy before → after."""
    if gate is None:
        return Text("not gated", style="dim")
    accepted = gate.get("accepted", gate.get("passed"))
    verdict = Text("accepted" if accepted else "rejected", style="green" if accepted else "red")
    old, new = gate.get("old_accuracy", gate.get("before")), gate.get("new_accuracy", gate.get("after"))
    if old is None or new is None:
        rest = {k: v for k, v in gate.items() if k not in ("accepted", "passed")}
        return verdict + Text(("  " + compact(rest)) if rest else "")
    n = f" (n={gate['n']})" if "n" in gate else ""
    noise = ""
    if gate.get("ci_low") is not None and gate.get("ci_high") is not None:
        noise = f", change in [{gate['ci_low']:+.2f}, {gate['ci_high']:+.2f}]"
    elif gate.get("p_value") is not None:
        noise = f", McNemar p={gate['p_value']:.3g}"
    return verdict + Text(f"  {fmt(old, '.2f')} → {fmt(new, '.2f')}{n}{noise}")


def metrics_text(metrics: dict[str, float]) -> str:
    """The few training metrics worth a column; the manifest keeps them all."""
    keys = [k for k in ("mean_loss", "train_loss", "loss", "reward", "mean_reward") if k in metrics][:2]
    return compact({k: metrics[k] for k in keys or list(metrics)[:2]})
