"""Console side of `insightloop eval`: run the harness, save after every run, print the table.

Progress goes to stderr; the Markdown table goes to stdout at the end. With `--resume`, runs
already in OUT/results.json (same suite, method and seed, without error) are kept, not repeated.
"""

from __future__ import annotations

from pathlib import Path

from insightloop.core.config import ConfigError, load_config
from insightloop.evals.harness.report import JSON_NAME, load_results, markdown, save_json, write_report
from insightloop.evals.harness.runner import Context, EvalSpec, Results, run_eval
from rich.console import Console
from rich.markup import escape


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _previous(out: Path, spec: EvalSpec, err: Console) -> Results | None:
    if not (out / JSON_NAME).exists():
        return None
    prev = load_results(out)
    if prev.spec.model_dump(exclude={"suites", "methods", "seeds"}) != spec.model_dump(
        exclude={"suites", "methods", "seeds"}
    ):
        err.print("[yellow]--resume: the saved run used other settings; starting afresh[/]")
        return None
    err.print(f"resuming: {len(prev.records)} runs found in {escape(str(out / JSON_NAME))}")
    return prev


def eval_command(
    suites: str,
    methods: str,
    n_train: int,
    n_test: int,
    budget: int,
    seeds: int,
    out: Path,
    config: str | None,
    overrides: list[str],
    resume: bool,
    seed_start: int = 0,
) -> int:
    """Run the benchmark and write OUT/results.json, results.md and the plots; returns the exit code."""
    err = Console(stderr=True)
    try:
        cfg = load_config(config, overrides)
        spec = EvalSpec(
            suites=_split(suites),
            methods=_split(methods),
            n_train=n_train,
            n_test=n_test,
            budget=budget,
            seeds=list(range(seed_start, seed_start + seeds)),
            config=config,
            overrides=overrides,
        )
    except (ConfigError, ValueError) as e:
        err.print(f"[red]{escape(str(e))}[/]")
        return 2
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous(out, spec, err) if resume else None

    def save(res: Results) -> None:
        save_json(res, out)
        (out / "results.md").write_text(markdown(res), encoding="utf-8")

    ctx = Context(cfg, log=lambda msg: err.print(escape(msg)))
    try:
        res = run_eval(spec, ctx, on_record=save, previous=previous)
    except ValueError as e:
        err.print(f"[red]{escape(str(e))}[/]")
        return 2
    finally:
        ctx.close()
    paths = write_report(res, out)
    print(markdown(res))
    err.print("wrote " + ", ".join(escape(str(p)) for p in paths.values()))
    return 0
