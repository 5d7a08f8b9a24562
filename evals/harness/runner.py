"""The benchmark harness: every method on identical splits under identical rollout budgets.

`run_eval(spec, ctx)` loops over suites × seeds × methods. For one (suite, seed) the split is drawn
once (`evals.suites.split`, seeded), so every method sees the same training and test problems.
Each method gets a fresh `Budget(max_rollouts=spec.budget)` for learning and must charge every
rollout it spends to it — baseline estimation, admission tries, GRPO samples, GEPA metric calls —
and the harness refuses a run that spent more (`BudgetExceeded`). Test evaluation is the same for
all methods (`evaluate`: the `sample` strategy with `cfg.loop.eval_samples` attempts at
`cfg.loop.eval_temperature`, memory frozen) and is not charged to the learning budget.

A method is a function `(ctx, run, budget) -> MethodResult`; `evals.baselines`, `evals.ours` and
`evals.gepa_peer` hold them and `METHODS` names them. Records and aggregates are pydantic models;
`evals.report` writes them out.
"""

from __future__ import annotations

import math
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from insightloop.agent.learn.loop import EvalItem, EvalReport
from insightloop.apps.runtime import Runtime
from insightloop.core.budget import Budget
from insightloop.core.config import Config, SearchConfig
from insightloop.core.episode import Episode
from insightloop.core.lm import LM
from insightloop.core.stats import mean_ci
from insightloop.core.task import Task
from insightloop.memory.embed import Embedder
from pydantic import BaseModel, Field

ALL_METHODS = ("none", "best-of-n", "episodic-rag", "reflect-success", "core", "core+fold", "grpo", "gepa")
InsightsFor = Callable[[Task], Sequence[str]]


class BudgetExceeded(RuntimeError):
    """A method spent more learning rollouts than the budget it was given."""


class EvalSpec(BaseModel):
    """What to run. With `config` and `overrides`, everything needed to reproduce a results.json."""

    suites: list[str]
    methods: list[str]
    n_train: int = Field(5, ge=1)
    n_test: int = Field(20, ge=1)
    budget: int = Field(30, ge=1, description="learning rollouts per method and run")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    config: str | None = None
    overrides: list[str] = Field(default_factory=list)


class RunSpec(BaseModel):
    """One (suite, seed) cell: the split every method of that cell shares, and the seeded config."""

    suite: str
    seed: int
    budget: int
    train: list[Task]
    test: list[Task]
    cfg: Config


class MethodResult(BaseModel):
    """What a method hands back: its test evaluation and anything worth recording."""

    report: EvalReport
    detail: dict[str, Any] = Field(default_factory=dict)


class RunRecord(BaseModel):
    """One method on one (suite, seed): accuracy, spend and time."""

    suite: str
    method: str
    seed: int
    budget: int
    accuracy: float
    scores: list[float]
    rollouts: int
    learn_prompt_tokens: int
    learn_completion_tokens: int
    prompt_tokens_per_problem: float
    train_ids: list[str]
    test_ids: list[str]
    learn_seconds: float
    eval_seconds: float
    seconds: float
    detail: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class Aggregate(BaseModel):
    """Mean over seeds of one method on one suite, with a 95 % t-interval half-width."""

    suite: str
    method: str
    seeds: int
    accuracy: float
    ci95: float
    rollouts: float
    prompt_tokens_per_problem: float
    seconds: float
    failed: int = 0


class Results(BaseModel):
    """The whole run: spec, config, machine, every record and the aggregates."""

    spec: EvalSpec
    config: dict[str, Any]
    machine: dict[str, Any]
    records: list[RunRecord] = Field(default_factory=list)
    aggregates: list[Aggregate] = Field(default_factory=list)
    started: float = 0.0
    wall_seconds: float = 0.0


Method = Callable[["Context", RunSpec, Budget], MethodResult]


class Context:
    """Loaded once per run and shared by all methods: the policy, the embedder, a scratch folder.

    Everything is lazy, so a run of `none` alone never loads the embedder, and a fake LM or a
    hashing embedder can be passed in for tests. `cache` lets methods that share an identical,
    deterministic first stage (the rejection sampling of best-of-n and episodic-rag) compute it
    once; each method still charges its rollouts to its own budget.
    """

    def __init__(
        self,
        cfg: Config,
        policy: LM | None = None,
        embedder: Embedder | None = None,
        workdir: str | Path | None = None,
        clock: Callable[[], float] = time.time,
        log: Callable[[str], None] = lambda _msg: None,
    ):
        self.cfg = cfg
        self.runtime = Runtime(cfg, policy=policy, embedder=embedder, clock=clock)
        self._tmp = tempfile.TemporaryDirectory(prefix="insightloop-eval-") if workdir is None else None
        self.workdir = Path(workdir) if workdir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.clock = clock
        self.log = log
        self.cache: dict[tuple[Any, ...], Any] = {}
        self.closers: list[Callable[[], None]] = []
        self._scratch: list[Path] = []

    @property
    def policy(self) -> LM:
        return self.runtime.policy

    @property
    def embedder(self) -> Embedder:
        return self.runtime.embedder

    def scratch(self, run: RunSpec, method: str) -> Path:
        """A fresh folder for one method's run (memory store, episodes, checkpoints)."""
        slug = "".join(c if c.isalnum() else "_" for c in f"{run.suite}-{run.seed}-{method}")
        path = self.workdir / slug
        n = 0
        while path.exists():
            n += 1
            path = self.workdir / f"{slug}-{n}"
        path.mkdir(parents=True)
        self._scratch.append(path)
        return path

    def clear_scratch(self) -> None:
        """Remove the scratch folders of finished runs (checkpoints are hundreds of MB each)."""
        import shutil

        for path in self._scratch:
            shutil.rmtree(path, ignore_errors=True)
        self._scratch.clear()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers.clear()
        if self._tmp is not None:
            self._tmp.cleanup()


def eval_search(cfg: Config) -> SearchConfig:
    """The test-time search, as `Learner.eval_search` builds it: whole samples, greedy by default."""
    return cfg.search.model_copy(
        update={
            "strategy": "sample",
            "rollouts": cfg.loop.eval_samples,
            "temperature": cfg.loop.eval_temperature,
        }
    )


def report_of(episodes: Sequence[Episode], seconds: float, use_memory: bool = True) -> EvalReport:
    items = [
        EvalItem(
            task_id=ep.task.id,
            correct=ep.correct,
            rollouts=ep.rollouts,
            score=sum(t.reward for t in ep.trajectories) / max(1, len(ep.trajectories)),
            prompt_tokens=ep.prompt_tokens,
        )
        for ep in episodes
    ]
    return EvalReport(use_memory=use_memory, items=items, seconds=seconds)


def evaluate(
    ctx: Context, run: RunSpec, insights_for: InsightsFor | None = None, lm: LM | None = None
) -> EvalReport:
    """The shared test measurement: frozen prompt additions, not charged to the learning budget."""
    from insightloop.agent.search.solve import solve_many

    start = ctx.clock()
    eps = solve_many(
        run.test,
        lm or ctx.policy,
        eval_search(run.cfg),
        insights_for,
        budget=Budget().start(ctx.clock),
        clock=ctx.clock,
    )
    return report_of(eps, ctx.clock() - start, insights_for is not None)


def seeded(cfg: Config, seed: int) -> Config:
    return cfg.model_copy(update={"seed": seed, "search": cfg.search.model_copy(update={"seed": seed})})


def make_runs(spec: EvalSpec, cfg: Config) -> list[RunSpec]:
    """Every (suite, seed) cell with its split: the same for all methods of the cell."""
    from insightloop.evals.suites import load_suite, split

    runs = []
    for seed in spec.seeds:  # seed-major: a cut-short run still has every suite and method
        for suite in spec.suites:
            limit = spec.n_train + spec.n_test if suite.startswith("rg/") else None
            train, test = split(load_suite(suite, limit=limit, seed=seed), spec.n_train, spec.n_test, seed)
            runs.append(
                RunSpec(
                    suite=suite, seed=seed, budget=spec.budget, train=train, test=test, cfg=seeded(cfg, seed)
                )
            )
    return runs


def run_method(ctx: Context, run: RunSpec, name: str, method: Method) -> RunRecord:
    """Run one method on one cell; check its spend against the budget; time it."""
    budget = Budget(max_rollouts=run.budget).start(ctx.clock)
    start = ctx.clock()
    try:
        result = method(ctx, run, budget)
    finally:
        ctx.clear_scratch()
    total = ctx.clock() - start
    if budget.rollouts > run.budget:
        raise BudgetExceeded(
            f"{name} spent {budget.rollouts} rollouts on {run.suite} seed {run.seed}, "
            f"over the budget of {run.budget}"
        )
    rep = result.report
    return RunRecord(
        suite=run.suite,
        method=name,
        seed=run.seed,
        budget=run.budget,
        accuracy=rep.accuracy,
        scores=[i.score for i in rep.items],
        rollouts=budget.rollouts,
        learn_prompt_tokens=budget.prompt_tokens,
        learn_completion_tokens=budget.completion_tokens,
        prompt_tokens_per_problem=rep.prompt_tokens_per_problem,
        train_ids=[t.id for t in run.train],
        test_ids=[t.id for t in run.test],
        learn_seconds=round(total - rep.seconds, 3),
        eval_seconds=round(rep.seconds, 3),
        seconds=round(total, 3),
        detail=result.detail,
    )


def failed_record(run: RunSpec, name: str, error: BaseException, seconds: float) -> RunRecord:
    """A method that raised on a cell: recorded with its error, accuracy 0, left out of aggregates."""
    return RunRecord(
        suite=run.suite,
        method=name,
        seed=run.seed,
        budget=run.budget,
        accuracy=0.0,
        scores=[],
        rollouts=0,
        learn_prompt_tokens=0,
        learn_completion_tokens=0,
        prompt_tokens_per_problem=0.0,
        train_ids=[t.id for t in run.train],
        test_ids=[t.id for t in run.test],
        learn_seconds=0.0,
        eval_seconds=0.0,
        seconds=round(seconds, 3),
        error=f"{type(error).__name__}: {error}",
    )


def machine_info() -> dict[str, Any]:
    import os

    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def _mean(xs: Sequence[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def aggregate(records: Sequence[RunRecord]) -> list[Aggregate]:
    """One row per (suite, method), in the order they first appear; failed runs are counted apart."""
    keys = list(dict.fromkeys((r.suite, r.method) for r in records))
    out = []
    for suite, method in keys:
        rs = [r for r in records if r.suite == suite and r.method == method]
        ok = [r for r in rs if r.error is None]
        acc, ci = mean_ci([r.accuracy for r in ok])
        out.append(
            Aggregate(
                suite=suite,
                method=method,
                seeds=len(ok),
                accuracy=acc,
                ci95=ci,
                rollouts=_mean([r.rollouts for r in ok]),
                prompt_tokens_per_problem=_mean([r.prompt_tokens_per_problem for r in ok]),
                seconds=_mean([r.seconds for r in ok]),
                failed=len(rs) - len(ok),
            )
        )
    return out


def methods_table() -> dict[str, Method]:
    """The method functions by name (imported here: they pull in heavier modules)."""
    from insightloop.evals.harness import baselines, gepa_peer, ours

    return {
        "none": baselines.run_none,
        "best-of-n": baselines.run_best_of_n,
        "episodic-rag": baselines.run_episodic_rag,
        "reflect-success": baselines.run_reflect_success,
        "core": ours.run_core,
        "core+fold": ours.run_core_fold,
        "grpo": baselines.run_grpo,
        "gepa": gepa_peer.run_gepa,
    }


def check_methods(names: Sequence[str], table: dict[str, Method]) -> None:
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown method(s) {', '.join(unknown)}; use any of: {', '.join(table)}")


def run_eval(
    spec: EvalSpec,
    ctx: Context,
    methods: dict[str, Method] | None = None,
    on_record: Callable[[Results], None] | None = None,
    previous: Results | None = None,
    keep_going: bool = True,
) -> Results:
    """Run every method on every cell; `on_record` sees the results after each run (to save them).

    Runs already in `previous` (same suite, method and seed) are kept, not repeated. With
    `keep_going`, a method that raises is recorded as failed and the run goes on; a budget
    overrun always raises.
    """
    table = methods or methods_table()
    check_methods(spec.methods, table)
    res = Results(
        spec=spec, config=ctx.cfg.model_dump(mode="json"), machine=machine_info(), started=time.time()
    )
    done = {(r.suite, r.method, r.seed): r for r in (previous.records if previous else []) if r.error is None}
    start = ctx.clock()
    for run in make_runs(spec, ctx.cfg):
        for name in spec.methods:
            if (run.suite, name, run.seed) in done:
                res.records.append(done[(run.suite, name, run.seed)])
                continue
            ctx.log(f"{run.suite} seed {run.seed}: {name}")
            res.records.append(_one(ctx, run, name, table[name], keep_going))
            res.aggregates = aggregate(res.records)
            res.wall_seconds = round(ctx.clock() - start, 1)
            if on_record is not None:
                on_record(res)
    res.aggregates = aggregate(res.records)
    res.wall_seconds = round(ctx.clock() - start, 1)
    return res


def _one(ctx: Context, run: RunSpec, name: str, method: Method, keep_going: bool) -> RunRecord:
    start = ctx.clock()
    try:
        rec = run_method(ctx, run, name, method)
    except BudgetExceeded:
        raise
    except Exception as exc:  # one method failing on one cell must not lose the whole run
        if not keep_going:
            raise
        rec = failed_record(run, name, exc, ctx.clock() - start)
        ctx.log(f"  failed: {rec.error}")
        return rec
    ctx.log(
        f"  accuracy {rec.accuracy:.3f}, {rec.rollouts}/{run.budget} rollouts, "
        f"{rec.prompt_tokens_per_problem:.0f} prompt tokens/problem, {rec.seconds:.0f} s"
    )
    return rec
