"""Learning curves from stored episodes: rolling accuracy with and without insights, and the lift.

`learning_curve(points, window)` turns episodes (in the order they finished) into rolling-accuracy
series; `save_curve_png(curve, path)` draws the same curves with matplotlib (Agg, no display) into
an existing folder.
The console renders the same `Curve` as a terminal chart, so the PNG and the terminal agree.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from insightloop.core.files import atomic_path
from pydantic import BaseModel, Field


class EpisodePoint(BaseModel):
    """What the curve needs from one episode."""

    finished: float
    correct: bool
    with_insights: bool


class Curve(BaseModel):
    """Rolling accuracies per episode index (None until a group has its first episode)."""

    window: int
    overall: list[float] = Field(default_factory=list)
    with_insights: list[float | None] = Field(default_factory=list)
    without_insights: list[float | None] = Field(default_factory=list)
    lift: list[float | None] = Field(default_factory=list)
    n_with: int = 0
    n_without: int = 0

    @property
    def final_lift(self) -> float | None:
        return next((x for x in reversed(self.lift) if x is not None), None)


def _mean(values: deque[float]) -> float | None:
    return sum(values) / len(values) if values else None


def learning_curve(points: Iterable[EpisodePoint], window: int = 20) -> Curve:
    """Rolling accuracy over the last `window` episodes of each group, at every episode index.

    Lift at index i is (with-insights accuracy) minus (without-insights accuracy), once both exist.
    """
    ordered = sorted(points, key=lambda p: p.finished)
    curve = Curve(window=window)
    recent: deque[float] = deque(maxlen=window)
    groups: dict[bool, deque[float]] = {True: deque(maxlen=window), False: deque(maxlen=window)}
    for p in ordered:
        score = 1.0 if p.correct else 0.0
        recent.append(score)
        groups[p.with_insights].append(score)
        with_acc, without_acc = _mean(groups[True]), _mean(groups[False])
        curve.overall.append(sum(recent) / len(recent))
        curve.with_insights.append(with_acc)
        curve.without_insights.append(without_acc)
        both = with_acc is not None and without_acc is not None
        curve.lift.append(with_acc - without_acc if both else None)
    curve.n_with = sum(1 for p in ordered if p.with_insights)
    curve.n_without = len(ordered) - curve.n_with
    return curve


def _xy(values: list[float | None]) -> tuple[list[int], list[float]]:
    pairs = [(i + 1, v) for i, v in enumerate(values) if v is not None]
    return [x for x, _ in pairs], [y for _, y in pairs]


def save_curve_png(curve: Curve, path: str | Path, title: str = "insightloop learning curve") -> Path:
    """Write the accuracy and lift curves as a PNG, atomically (readers never see half a file).

    The folder must exist: a mistyped path raises `FileNotFoundError` instead of creating folders.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(path)
    if not out.parent.is_dir():
        raise FileNotFoundError(f"directory does not exist: {out.parent}")
    fig = _figure(curve, title)
    try:
        with atomic_path(out) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
            os.chmod(tmp, 0o644)  # the temporary file is private; a plot is meant to be shared
    finally:
        plt.close(fig)
    return out


def _figure(curve: Curve, title: str) -> Any:
    """Accuracy with and without insights (top) and the lift (bottom), on one shared x axis."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (acc_ax, lift_ax) = plt.subplots(2, 1, figsize=(8, 6), sharex=True,
                                          gridspec_kw={"height_ratios": [2, 1]})
    dots = {"marker": "o", "markersize": 3}  # a group with one episode still shows
    acc_ax.plot(*_xy(curve.with_insights), label=f"with insights (n={curve.n_with})", color="tab:green",
                **dots)
    acc_ax.plot(*_xy(curve.without_insights), label=f"without insights (n={curve.n_without})",
                color="tab:red", **dots)
    acc_ax.plot(*_xy(list(curve.overall)), label="all episodes", color="tab:gray", linestyle="--")
    acc_ax.set_ylim(-0.02, 1.02)
    acc_ax.set_ylabel(f"rolling accuracy (last {curve.window})")
    acc_ax.set_title(title)
    acc_ax.legend(loc="upper left", fontsize=8)
    acc_ax.grid(alpha=0.3)
    lift_ax.axhline(0.0, color="black", linewidth=0.8)
    lift_ax.plot(*_xy(curve.lift), color="tab:blue", **dots)
    lift_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    lift_ax.set_ylim(-1.02, 1.02)
    lift_ax.set_ylabel("lift")
    lift_ax.set_xlabel("episode (in order finished)")
    lift_ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
