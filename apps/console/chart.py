"""A terminal line chart: series of values in [lo, hi] drawn as marker characters on a text grid.

The console's `curve` command draws the learning curve with it; `apps/console/curve.py` draws the
same series as a PNG.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text

Series = tuple[str, Sequence[float | None], str, str]  # (name, values, style, marker)


def bucket(values: Sequence[float | None], width: int) -> list[float | None]:
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


def line_chart(series: list[Series], lo: float, hi: float, height: int = 10, width: int = 60) -> Text:
    """One marker per column per series, y from `lo` (bottom) to `hi` (top), then axis and legend."""
    cols = max((len(bucket(s, width)) for _, s, _, _ in series), default=0)
    grid: list[list[tuple[str, str]]] = [[(" ", "")] * cols for _ in range(height)]
    for _, values, style, mark in series:
        for x, v in enumerate(bucket(values, width)):
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
    return text + _axis(series, cols)


def _axis(series: list[Series], cols: int) -> Text:
    """The x axis (episode 1 to n) and the legend."""
    text = Text()
    text.append("      └" + "─" * cols + "\n", style="dim")
    n = max((len(s) for _, s, _, _ in series), default=0)
    text.append(f"       1{'episode':^{max(cols - 2 - len(str(n)), 0)}} {n}\n", style="dim")
    legend = Text("       ")
    for name, _, style, mark in series:
        legend.append(f"{mark} {name}   ", style=style)
    return text + legend
