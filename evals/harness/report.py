"""Writing a harness run out: results.json, a Markdown table and two PNG plots.

- `results.json`: the `Results` model (spec, full config, machine, every run record, aggregates),
  written atomically; `load_results` reads it back, so a run can be resumed or re-reported.
- `results.md`: per suite and method, mean accuracy ± the 95 % t-interval half-width over seeds,
  learning rollouts used, prompt tokens per test problem, wall time and the most frequent test answer
  with its share (a lift that is one label given to every problem shows there); then the mean over
  suites.
- `accuracy_vs_rollouts.png`: per suite, each method's mean test accuracy against the learning
  rollouts it used (a line from the unlearned model at 0 rollouts), with the interval as error bars.
- `prompt_tokens.png`: mean prompt tokens per test problem per method.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from insightloop.core.files import atomic_write
from insightloop.evals.harness.aggregate import aggregate, lifts
from insightloop.evals.harness.records import Aggregate, Results

JSON_NAME = "results.json"
MD_NAME = "results.md"
CURVE_PNG = "accuracy_vs_rollouts.png"
TOKENS_PNG = "prompt_tokens.png"


def save_json(res: Results, out: Path) -> Path:
    path = out / JSON_NAME
    atomic_write(path, res.model_dump_json(indent=1))
    return path


def load_results(path: str | Path) -> Results:
    """A results.json (or the folder holding one)."""
    p = Path(path)
    p = p / JSON_NAME if p.is_dir() else p
    return Results.model_validate_json(p.read_text(encoding="utf-8"))


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100 * x:.1f}"


def _cell(a: Aggregate) -> str:
    acc = f"{_pct(a.accuracy)} ± {_pct(a.ci95)}" if a.seeds > 1 else _pct(a.accuracy)
    return acc + (f" ({a.failed} failed)" if a.failed else "")


def _top(a: Aggregate) -> str:
    """The most frequent test answer and its share, quoted, cut to 24 characters, `|` escaped."""
    if a.top_answer is None:
        return "-"
    text = a.top_answer if len(a.top_answer) <= 24 else a.top_answer[:23] + "…"
    shown = f'"{text}"'.replace("|", "\\|") if a.top_answer else "(no answer)"
    return f"{shown} {100 * a.top_share:.0f} %"


def _row(a: Aggregate, label: str) -> str:
    return (
        f"| {label} | {a.method} | {_cell(a)} | {a.seeds} | {a.rollouts:.1f} | "
        f"{a.prompt_tokens_per_problem:.0f} | {a.seconds:.0f} | {_top(a)} |"
    )


def overall(aggs: Sequence[Aggregate]) -> list[tuple[str, float, float, float]]:
    """Per method: mean accuracy over suites, mean prompt tokens per problem, mean seconds per run."""
    out = []
    for method in dict.fromkeys(a.method for a in aggs):
        rows = [a for a in aggs if a.method == method and a.seeds > 0]
        if rows:
            out.append(
                (
                    method,
                    statistics.fmean(a.accuracy for a in rows),
                    statistics.fmean(a.prompt_tokens_per_problem for a in rows),
                    statistics.fmean(a.seconds for a in rows),
                )
            )
    return out


def markdown(res: Results) -> str:
    """The results table (accuracy in %, mean ± 95 % t-interval half-width over seeds)."""
    s = res.spec
    lines = [
        f"Suites: {', '.join(s.suites)}. {s.n_train} training and {s.n_test} test problems per seed, "
        f"seeds {', '.join(map(str, s.seeds))}, learning budget {s.budget} rollouts per method and run. "
        f"Total wall time {res.wall_seconds / 60:.1f} min on {res.machine.get('cpus')} CPU cores.",
        "",
        "| suite | method | test accuracy % (mean ± 95% CI) | seeds | rollouts used | "
        "prompt tokens / test problem | wall s / run | most frequent answer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in res.aggregates:
        lines.append(_row(a, a.suite))
    lines += [
        "",
        "Mean over suites:",
        "",
        "| method | test accuracy % | prompt tokens / test problem | wall s / run |",
        "|---|---|---|---|",
    ]
    for method, acc, tok, sec in overall(res.aggregates):
        lines.append(f"| {method} | {_pct(acc)} | {tok:.0f} | {sec:.0f} |")
    if res.lifts:
        lines += ["", "Paired lift over the unlearned model (`none`), and of `core+fold` over `core`, per test "
                  "problem over all seeds:", "",
                  "| suite | method | against | test problems | lift (points) | 95% CI (paired bootstrap) "
                  "| McNemar p |",
                  "|---|---|---|---|---|---|---|"]
        lines += [f"| {x.suite} | {x.method} | {x.baseline} | {x.n} | {100 * x.lift:+.1f} | "
                  f"[{100 * x.lo:+.1f}, {100 * x.hi:+.1f}] | {x.mcnemar_p:.3g} |" for x in res.lifts]
    failed = [r for r in res.records if r.error]
    if failed:
        lines += ["", "Failed runs:", ""] + [
            f"- {r.suite} / {r.method} / seed {r.seed}: {r.error}" for r in failed
        ]
    return "\n".join(lines) + "\n"


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(res: Results, path: Path) -> Path:
    """Accuracy vs learning rollouts, one panel per suite, one line per method from the origin."""
    plt = _plt()
    suites = list(dict.fromkeys(a.suite for a in res.aggregates))
    cols = min(2, max(1, len(suites)))
    rows = math.ceil(len(suites) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax, suite in zip(axes.flat, suites, strict=False):
        aggs = [a for a in res.aggregates if a.suite == suite and a.seeds > 0]
        base = next((a.accuracy for a in aggs if a.method == "none"), None)
        span = max([a.rollouts for a in aggs] + [1.0])
        for k, a in enumerate(aggs):
            # Methods spending the same budget would hide each other: nudge each end point sideways.
            x_end = a.rollouts + span * 0.012 * (k - len(aggs) / 2)
            xs, ys = (
                ([0.0, x_end], [base, a.accuracy])
                if base is not None and a.method != "none"
                else ([x_end], [a.accuracy])
            )
            line = ax.plot(xs, [100 * y for y in ys], marker="o", label=a.method)[0]
            ax.errorbar(
                [x_end],
                [100 * a.accuracy],
                yerr=[100 * (0 if math.isnan(a.ci95) else a.ci95)],
                color=line.get_color(),
                capsize=3,
            )
        ax.set_title(suite)
        ax.set_xlabel("learning rollouts used")
        ax.set_ylabel("test accuracy %")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(suites) :]:
        ax.set_visible(False)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(8, len(labels)), frameon=False)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_tokens(res: Results, path: Path) -> Path:
    """Mean prompt tokens per test problem per method (mean over suites)."""
    plt = _plt()
    rows = overall(res.aggregates)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.bar([r[0] for r in rows], [r[2] for r in rows], color="#4C72B0")
    for i, r in enumerate(rows):
        ax.text(i, r[2], f"{r[2]:.0f}", ha="center", va="bottom", fontsize=8)
    ax.set_ylabel("prompt tokens per test problem")
    ax.set_title("prompt cost at test time (mean over suites)")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(res: Results, out: str | Path) -> dict[str, Path]:
    """results.json, results.md and both PNGs in `out`; returns their paths."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": save_json(res, folder)}
    md = folder / MD_NAME
    atomic_write(md, markdown(res))
    paths["md"] = md
    if res.aggregates:
        paths["curves"] = plot_curves(res, folder / CURVE_PNG)
        paths["tokens"] = plot_tokens(res, folder / TOKENS_PNG)
    return paths


def merge(parts: Sequence[Results]) -> Results:
    """One `Results` from runs of the same settings over different suites, seeds or methods (e.g. two
    processes sharing the machine): records concatenated (a run present twice, or failed, is kept
    once / dropped), aggregates recomputed, wall time = max."""
    if not parts:
        raise ValueError("nothing to merge")
    first = parts[0]
    keep = {"suites", "seeds", "methods"}
    for p in parts[1:]:
        if p.spec.model_dump(exclude=keep) != first.spec.model_dump(exclude=keep) or p.config != first.config:
            raise ValueError("cannot merge results of different settings (sizes, budget or config)")
    seen: set[tuple[str, str, int]] = set()
    records = []
    for r in (r for p in parts for r in p.records if r.error is None):
        if (r.suite, r.method, r.seed) not in seen:  # the same run done twice: keep the first
            seen.add((r.suite, r.method, r.seed))
            records.append(r)
    spec = first.spec.model_copy(
        update={
            "suites": list(dict.fromkeys(s for p in parts for s in p.spec.suites)),
            "seeds": sorted({s for p in parts for s in p.spec.seeds}),
            "methods": list(dict.fromkeys(m for p in parts for m in p.spec.methods)),
        }
    )
    return first.model_copy(
        update={
            "spec": spec,
            "records": records,
            "aggregates": aggregate(records),
            "lifts": lifts(records),
            "wall_seconds": max(p.wall_seconds for p in parts),
        }
    )
