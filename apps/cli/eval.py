"""`insightloop eval`: run the harness, save after every run, print the table.

Progress goes to stderr; the Markdown table goes to stdout at the end. With `--resume`, runs
already in OUT/results.json (same suite, method and seed, without error) are kept, not repeated.
The method names are the harness's own (`evals.harness.methods.ALL_METHODS`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from insightloop.apps.cli.daemon import RayAddress, Workers
from insightloop.apps.cli.errors import user_errors
from insightloop.apps.cli.options import ConfigFile, Overrides, load
from insightloop.apps.distributed.cluster import requested_workers
from insightloop.apps.distributed.evaluation import run_eval_on_ray
from insightloop.core.config import Config
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.methods import ALL_METHODS
from insightloop.evals.harness.records import EvalSpec, Results
from insightloop.evals.harness.report import JSON_NAME, load_results, markdown, save_json, write_report
from insightloop.evals.harness.runner import run_eval
from rich.console import Console
from rich.markup import escape


def eval_(
    suite: Annotated[str, typer.Option("--suite", help="suite(s), comma-separated: bbh/navigate,gsm8k")],
    methods: Annotated[str | None, typer.Option(
        "--methods", help="comma-separated method names (default: all of the harness's methods; "
                          "an unknown name lists them)")] = None,
    n_train: Annotated[int, typer.Option("--train", min=1, help="training problems per seed")] = 5,
    n_test: Annotated[int, typer.Option(
        "--test", min=1, help="test problems per seed (at most the rest of the suite)")] = 120,
    budget: Annotated[int, typer.Option("--budget", min=1, help="learning rollouts per method and run")] = 30,
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="number of seeds (0..S-1)")] = 3,
    seed_start: Annotated[int, typer.Option("--seed-start", min=0, help="first seed (to split a run)")] = 0,
    out: Annotated[Path, typer.Option("--out", help="output folder: results.json, results.md, PNGs")] = Path(
        "eval-results"),
    config: ConfigFile = None,
    overrides: Overrides = None,
    resume: Annotated[bool, typer.Option("--resume", help="keep finished runs of OUT/results.json")] = False,
    workers: Workers = None,
    ray_address: RayAddress = None,
) -> None:
    """Benchmark methods side by side: same model, same splits, same rollout budget."""
    cfg = load(config, overrides)
    n = requested_workers(cfg.ray, workers, ray_address)
    with user_errors(ValueError):  # pydantic's ValidationError is a ValueError: say which field
        spec = EvalSpec(suites=_split(suite), methods=list(ALL_METHODS) if methods is None else _split(methods),
                        n_train=n_train, n_test=n_test, budget=budget,
                        seeds=list(range(seed_start, seed_start + seeds)), config=config,
                        overrides=list(overrides or []))
    run_and_report(cfg, spec, out, resume, n, ray_address)


def run_and_report(cfg: Config, spec: EvalSpec, out: Path, resume: bool, workers: int = 0,
                   ray_address: str | None = None) -> None:
    """Run the spec, saving OUT/results.json and results.md after every run; print the table."""
    err = Console(stderr=True)
    out.mkdir(parents=True, exist_ok=True)
    previous = _previous(out, spec, err) if resume else None

    def save(res: Results) -> None:
        save_json(res, out)
        (out / "results.md").write_text(markdown(res), encoding="utf-8")

    def log(msg: str) -> None:
        err.print(escape(msg))

    if workers:  # the cells on Ray workers; the single-process path below never imports Ray
        with user_errors(ValueError):
            res = run_eval_on_ray(spec, cfg, workers, ray_address, on_record=save, previous=previous, log=log)
    else:
        ctx = Context(cfg, log=log)
        try:
            with user_errors(ValueError):  # an unknown method or suite
                res = run_eval(spec, ctx, on_record=save, previous=previous)
        finally:
            ctx.close()
    paths = write_report(res, out)
    print(markdown(res))
    err.print("wrote " + ", ".join(escape(str(p)) for p in paths.values()))


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _previous(out: Path, spec: EvalSpec, err: Console) -> Results | None:
    """The saved results to resume from, or None when there are none or they used other settings."""
    if not (out / JSON_NAME).exists():
        return None
    prev = load_results(out)
    varying = {"suites", "methods", "seeds"}
    if prev.spec.model_dump(exclude=varying) != spec.model_dump(exclude=varying):
        err.print("[yellow]--resume: the saved run used other settings; starting afresh[/]")
        return None
    err.print(f"resuming: {len(prev.records)} runs found in {escape(str(out / JSON_NAME))}")
    return prev
