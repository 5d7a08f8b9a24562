"""Running the harness: every method on identical splits under identical rollout budgets.

`run_eval(spec, ctx)` loops over suites × seeds × methods. For one (suite, seed) the split is drawn
once (`evals.suites.split`, seeded), so every method sees the same training and test problems.
Each method gets a fresh `Budget(max_rollouts=spec.budget)` for learning and must charge every
rollout it spends to it — baseline estimation, admission tries, GRPO samples, GEPA metric calls —
and the harness refuses a run that spent more (`BudgetExceeded`). Test evaluation is the same for
all methods (`measure.evaluate`) and is not charged to the learning budget.

The methods are named in `methods`; the records and aggregates are the models of `records`, and
`report` writes them out.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.evals.harness.aggregate import aggregate, lifts, machine_info
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.methods import Method, check_methods, methods_table
from insightloop.evals.harness.records import EvalSpec, Results, RunRecord, RunSpec, failed_record
from insightloop.evals.suites import load_suite, split


class BudgetExceeded(RuntimeError):
    """A method spent more learning rollouts than the budget it was given."""


def seeded(cfg: Config, seed: int) -> Config:
    """`cfg` with `seed` as the run seed and the search seed."""
    return cfg.model_copy(update={"seed": seed, "search": cfg.search.model_copy(update={"seed": seed})})


def make_runs(spec: EvalSpec, cfg: Config) -> list[RunSpec]:
    """Every (suite, seed) cell with its split: the same for all methods of the cell."""
    runs = []
    for seed in spec.seeds:  # seed-major: a cut-short run still has every suite and method
        for suite in spec.suites:
            limit = spec.n_train + spec.n_test if suite.startswith("rg/") else None
            train, test = split(load_suite(suite, limit=limit, seed=seed), spec.n_train, spec.n_test, seed,
                                cap_test=True)
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
        answers=[i.answer for i in rep.items],
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
    runs = make_runs(spec, ctx.cfg)
    for run in runs:  # every prompt against the policy's context, before any model work
        ctx.runtime.prompt_limit.check([*run.train, *run.test])
    for run in runs:
        for name in spec.methods:
            if (run.suite, name, run.seed) in done:
                res.records.append(done[(run.suite, name, run.seed)])
                continue
            ctx.log(f"{run.suite} seed {run.seed}: {name}")
            res.records.append(run_one(ctx, run, name, table[name], keep_going))
            res.aggregates, res.lifts = aggregate(res.records), lifts(res.records)
            res.wall_seconds = round(ctx.clock() - start, 1)
            if on_record is not None:
                on_record(res)
    res.aggregates, res.lifts = aggregate(res.records), lifts(res.records)
    res.wall_seconds = round(ctx.clock() - start, 1)
    return res


def run_one(ctx: Context, run: RunSpec, name: str, method: Method, keep_going: bool) -> RunRecord:
    """One method on one cell, logged; with `keep_going` a method that raises is recorded as failed
    (a budget overrun always raises). A run over workers calls this in each worker."""
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
