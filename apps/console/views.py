"""What every console renderer shares: clipping, numbers, times, styles and one-line messages.

Pure functions of values. A command that fails returns an `ErrorText`, so a caller (the shell, a
`--command` script) can tell a failure from output without parsing it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from insightloop.core.episode import Episode
from rich.text import Text

STEP_CHARS = 72


class ErrorText(Text):
    """The rendering of a failed command."""


def message(text: str, style: str = "green") -> Text:
    """A one-line result; red marks a failure (an `ErrorText`)."""
    return ErrorText(text, style=style) if style == "red" else Text(text, style=style)


def clip(text: str, n: int = STEP_CHARS) -> str:
    """`text` on one line, at most `n` characters (an ellipsis marks the cut)."""
    flat = " ".join(text.split())
    return flat if len(flat) <= n else flat[: n - 1] + "…"


def when(ts: float | None, short: bool = False) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts).strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def clock_time(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if ts else "-"


def fmt(x: float | None, spec: str = "+.2f") -> str:
    return "-" if x is None else format(x, spec)


def plain(value: Any) -> str:
    """A JSON value for a table cell: big or whole floats without decimals, None as '-'."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.0f}" if value.is_integer() or abs(value) >= 1000 else f"{value:.4g}"
    return str(value)


def compact(data: Any) -> str:
    """A dict as `k=v, k=v` (nested dicts inline), anything else as `plain`."""
    if not isinstance(data, dict):
        return plain(data)
    return ", ".join(f"{k}={plain(v) if not isinstance(v, dict) else compact(v)}" for k, v in data.items())


def status_style(status: str) -> str:
    return {"active": "green", "retired": "red", "pending": "yellow"}.get(status, "")


def utility_text(u: float | None, lo: float | None, hi: float | None) -> Text:
    """The utility, green when its interval is above zero, red when below."""
    style = "green" if lo is not None and lo > 0 else "red" if hi is not None and hi < 0 else ""
    return Text(fmt(u), style=style)


def reward_text(ep: Episode) -> Text:
    if ep.reward is None:
        return Text("unverified", style="dim")
    return Text(f"{ep.reward.score:.2f}", style="green" if ep.reward.correct else "red")
