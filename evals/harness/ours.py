"""insightloop's own methods for the harness: `core` (non-parametric) and `core+fold`.

- `core`: the CORE loop as `agent.adapt` runs it — `Learner.train` on the training problems within
  the budget (baseline estimation, training episodes, synthesis and admission tries all counted),
  then `Learner.evaluate` on the test problems with the memory frozen.
- `core+fold`: the same Learner, then one fold of its episodes and verified chains into the weights
  through `rl.fold.fold` with `fold.method` (GRPO with mixed-policy groups by default; SFT or DPO on
  what the loop verified, and with `fold.reference_answers` on the training problems' labels), then
  the held-out gate. The fold's GRPO samples and the gate's attempts are rollouts too, so they are
  reserved out of the budget before training: the Learner gets what is left. SFT and DPO sample
  nothing and run `fold.steps` steps. The test measurement uses the weights the gate kept plus the
  frozen memory; the shared policy goes back to the base weights afterwards.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

from insightloop.agent.learn.reports import EvalReport, TrainReport
from insightloop.core.budget import Budget
from insightloop.core.config import Config
from insightloop.core.task import Task
from insightloop.evals.harness.baselines import restore_base
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.records import MethodResult, RunSpec
from insightloop.rl.fold import fold
from insightloop.rl.sources import held_out, load_fold_data

FOLD_SHARE = 1 / 3  # of the budget reserved for the fold's GRPO samples


def _learn(
    ctx: Context, run: RunSpec, budget: Budget, cfg: Config, where: Path, plan: tuple[int, int] | None = None
) -> tuple[EvalReport, TrainReport, list[str], dict]:
    """Train a Learner in `where`, optionally fold, then evaluate with the memory frozen."""
    fold_detail: dict = {}
    with ctx.runtime.memory(where) as store:
        learner = ctx.runtime.learner(store, run_dir=where, cfg=cfg, rng=random.Random(run.seed))
        reserved = plan[1] if plan else 0
        learn_budget = budget.child(max(0, (budget.remaining_rollouts() or 0) - reserved))
        train = learner.train(run.train, learn_budget)
        budget.absorb(learn_budget)
        if plan is not None:
            fold_detail = _fold(ctx, cfg, where, budget, plan[0], run.train)
        report = learner.evaluate(run.test, use_memory=True, budget=Budget().start(ctx.clock))
        insights = [i.text for i in store.list_insights(status="active")]
    return report, train, insights, fold_detail


def _train_detail(train: TrainReport, insights: list[str]) -> dict:
    return {
        "episodes": train.episodes,
        "solved": train.solved,
        "insights_admitted": train.insights_admitted,
        "insights_rejected": train.insights_rejected,
        "chains_verified": train.chains_verified,
        "insights": insights,
    }


def run_core(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """The CORE loop within the budget, then the test problems with the memory frozen."""
    where = ctx.scratch(run, "core")
    report, train, insights, _ = _learn(ctx, run, budget, run.cfg, where)
    return MethodResult(report=report, detail=_train_detail(train, insights))


def fold_config(run: RunSpec) -> Config:
    """The run's config with the gate holding out at most a third of the training problems (at least
    one). The seeded third `rl.sources.split_validation` picks keeps a growing run's folds apart; on
    five problems it can be four of them, leaving the one fold of a harness run one to learn from."""
    fc = run.cfg.fold
    cap = max(1, len(run.train) // 3)
    return run.cfg.model_copy(update={"fold": fc.model_copy(update={"gate_slice": min(fc.gate_slice, cap)})})


def fold_plan(run: RunSpec, budget: int) -> tuple[int, int]:
    """(GRPO steps of the fold, rollouts reserved for it): fixed before training starts.

    A step samples one group per prompt; the gate then measures old and new weights once each on
    the held-out slice `rl.fold` takes from the training tasks (`rl.sources.held_out`: the most it
    can be, whichever of them the Learner reached).
    """
    cfg = fold_config(run)
    fc = cfg.fold
    held = len(held_out(run.train, fc.gate_slice, cfg.seed))
    if fc.method != "grpo":  # SFT and DPO train on the verified texts: only the gate's attempts cost
        return fc.steps, 2 * held
    per_step = max(1, min(fc.batch_size, len(run.train) - held))
    group = fc.grpo.group_size
    steps = int(budget * FOLD_SHARE) // (group * per_step)
    return steps, steps * group * per_step + 2 * held


def _fold(ctx: Context, cfg: Config, where: Path, budget: Budget, steps: int, train: Sequence[Task]) -> dict:
    """One fold with the planned steps; its GRPO samples and gate attempts are charged as rollouts.
    With `fold.reference_answers` it learns the labels of every training problem, also of those the
    Learner's budget gave no episode."""
    if steps == 0:
        return {"fold": "skipped: the budget leaves no GRPO step"}
    fc = cfg.fold
    cfg = cfg.model_copy(update={"fold": fc.model_copy(update={"steps": steps})})
    try:
        data = load_fold_data(where, cfg, labeled=train)
        result = fold(where, cfg, lm=ctx.policy, data=data)
    except ValueError as exc:  # no episodes or prompts to fold: recorded, the memory still counts
        return {"fold": f"skipped: {exc}"}
    used = int(result.metrics.get("groups", 0)) * fc.grpo.group_size + 2 * result.gate.n
    budget.charge([], rollouts=used)
    return {
        "fold": "accepted" if result.accepted else "rejected",
        "fold_method": fc.method,
        "fold_steps": steps,
        "fold_rollouts": used,
        "gate_old": result.gate.old_accuracy,
        "gate_new": result.gate.new_accuracy,
    }


def run_core_fold(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
    """The CORE loop, one fold into the weights, then the test problems (weights + frozen memory)."""
    where = ctx.scratch(run, "core_fold")
    plan = fold_plan(run, budget.remaining_rollouts() or 0)
    try:
        report, train, insights, fold_detail = _learn(ctx, run, budget, fold_config(run), where, plan)
    finally:
        restore_base(ctx, run)
    return MethodResult(report=report, detail=_train_detail(train, insights) | fold_detail)
