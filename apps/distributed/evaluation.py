"""`insightloop eval --workers N`: the harness's cells spread over N workers.

The unit of work is a cell: one (suite, seed) split with all its methods, run in the spec's method
order by one worker exactly as `run_eval` runs it in one process (`run_one` per method; the methods
of a cell share the worker's cache of their common first sampling stage; each method run keeps its
own scratch memory, written only by the worker that runs it). Each worker loads the policy once
(its own `Context`). The driver draws the splits, checks every prompt against the policy's context
before any model work, hands cells to idle workers, and assembles the records in the spec's order,
so results.json does not depend on which worker ran which cell or when it finished: with the same
seeds, `--workers 2` gives the results of `--workers 1` (timings aside).

A worker that dies loses only its cell, which runs again on another worker while a fresh one takes
the dead one's slot; a cell that `CELL_ATTEMPTS` workers died on is recorded as failed. A budget
overrun raises here as in one process.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from collections.abc import Callable

from insightloop.apps.distributed.cluster import RaySession
from insightloop.apps.distributed.pool import Finished, Pool, RayPool
from insightloop.apps.distributed.worker import WorkerInfo
from insightloop.apps.runtime import Runtime
from insightloop.core.config import Config
from insightloop.core.lm import LM
from insightloop.evals.harness.aggregate import aggregate, lifts, machine_info
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.methods import check_methods, methods_table
from insightloop.evals.harness.records import EvalSpec, Results, RunRecord, RunSpec, failed_record
from insightloop.evals.harness.runner import BudgetExceeded, make_runs, run_one
from insightloop.memory.embed import Embedder
from pydantic import BaseModel, Field

CELL_ATTEMPTS = 3


class CellFailed(RuntimeError):
    """A method raised in a worker and the run was asked not to keep going."""


class WorkerDied(RuntimeError):
    """The workers running a cell died; its methods are recorded as failed with this error."""


class Cell(BaseModel):
    """One (suite, seed) split and the methods still to run on it; `index` is its place in the spec."""

    index: int
    run: RunSpec
    methods: list[str]


class CellResult(BaseModel):
    """A cell's records, or why it stopped: a budget overrun, or (not keeping going) a method's error."""

    records: list[RunRecord] = Field(default_factory=list)
    budget_exceeded: str | None = None
    error: str | None = None


class EvalWorker:
    """Runs cells on its own `Context` (a Ray actor in a run; in-process with fakes in tests)."""

    def __init__(self, cfg: Config, name: str, policy: LM | None = None, embedder: Embedder | None = None) -> None:
        self.name = name
        self.ctx = Context(cfg, policy=policy, embedder=embedder)

    def info(self) -> WorkerInfo:
        return WorkerInfo(name=self.name, pid=os.getpid(), node=socket.gethostname())

    def warm(self) -> WorkerInfo:
        """Load the policy now (the first cell would otherwise pay for it)."""
        _ = self.ctx.policy
        return self.info()

    def run_cell(self, run: RunSpec, methods: list[str], keep_going: bool) -> CellResult:
        """The cell's methods in order, as `run_eval` runs them; a budget overrun ends the cell."""
        table = methods_table()
        out = CellResult()
        for name in methods:
            try:
                out.records.append(run_one(self.ctx, run, name, table[name], keep_going))
            except BudgetExceeded as e:
                return out.model_copy(update={"budget_exceeded": str(e)})
            except Exception as e:  # only without keep_going: the driver stops the run with it
                return out.model_copy(update={"error": f"{run.suite} seed {run.seed}: {name}: "
                                                       f"{type(e).__name__}: {e}"})
        return out

    def close(self) -> None:
        self.ctx.close()


def _progress(rec: RunRecord) -> str:
    if rec.error is not None:
        return f"{rec.suite} seed {rec.seed}: {rec.method}: failed: {rec.error}"
    return (f"{rec.suite} seed {rec.seed}: {rec.method}: accuracy {rec.accuracy:.3f}, "
            f"{rec.rollouts}/{rec.budget} rollouts, {rec.prompt_tokens_per_problem:.0f} prompt tokens/problem, "
            f"{rec.seconds:.0f} s")


def drive(cells: list[Cell], pool: Pool, keep_going: bool, on_cell: Callable[[int, list[RunRecord]], None],
          log: Callable[[str], None] = lambda _msg: None, poll_s: float = 1.0) -> None:
    """Run every cell on the pool (see the module docstring); `on_cell` sees each cell's records."""
    queue = deque(c for c in cells if c.methods)
    running: dict[int, Cell] = {}
    deaths: dict[int, int] = {}
    tried: dict[int, set[int]] = {}
    while queue or running:
        for slot in pool.idle():
            if not queue:
                break
            cell = next((c for c in queue if slot not in tried.get(c.index, set())), queue[0])
            queue.remove(cell)
            log(f"{cell.run.suite} seed {cell.run.seed}: {', '.join(cell.methods)} on {pool.name(slot)}")
            pool.submit(slot, str(cell.index), "run_cell", cell.run, cell.methods, keep_going)
            running[slot] = cell
        for finished in pool.wait(poll_s):
            cell = running.pop(finished.slot)
            if finished.crash is None:
                on_cell(cell.index, _records(finished))
                continue
            log(f"worker {pool.name(finished.slot)} died running {cell.run.suite} seed {cell.run.seed}: "
                f"{finished.crash}")
            pool.replace(finished.slot)
            deaths[cell.index] = deaths.get(cell.index, 0) + 1
            tried.setdefault(cell.index, set()).add(finished.slot)
            if deaths[cell.index] < CELL_ATTEMPTS:
                queue.appendleft(cell)
            else:
                died = WorkerDied(f"{deaths[cell.index]} workers died running it; last: {finished.crash}")
                on_cell(cell.index, [failed_record(cell.run, m, died, 0.0) for m in cell.methods])


def _records(finished: Finished) -> list[RunRecord]:
    result: CellResult = finished.value
    if result.budget_exceeded is not None:
        raise BudgetExceeded(result.budget_exceeded)
    if result.error is not None:
        raise CellFailed(result.error)
    return result.records


def run_eval_on_workers(spec: EvalSpec, cfg: Config, pool: Pool, *,
                        on_record: Callable[[Results], None] | None = None, previous: Results | None = None,
                        keep_going: bool = True, log: Callable[[str], None] = lambda _msg: None,
                        runtime: Runtime | None = None) -> Results:
    """`run_eval` over a pool of `EvalWorker`s: the same records, in the same order. Prompts are
    checked against `runtime`'s policy context (default: the one the config names)."""
    check_methods(spec.methods, methods_table())
    runs = make_runs(spec, cfg)
    limit = (runtime or Runtime(cfg)).prompt_limit
    for run in runs:  # every prompt against the policy's context, before any model work
        limit.check([*run.train, *run.test])
    res = Results(spec=spec, config=cfg.model_dump(mode="json"), machine=machine_info(), started=time.time())
    done = {(r.suite, r.method, r.seed): r for r in (previous.records if previous else []) if r.error is None}
    cells = [Cell(index=i, run=run, methods=[m for m in spec.methods if (run.suite, m, run.seed) not in done])
             for i, run in enumerate(runs)]
    finished: dict[int, dict[str, RunRecord]] = {}
    start = time.monotonic()

    def assemble() -> None:  # the spec's order, whatever order the cells finished in
        res.records = [rec for i, run in enumerate(runs) for m in spec.methods
                       if (rec := done.get((run.suite, m, run.seed)) or finished.get(i, {}).get(m)) is not None]
        res.aggregates, res.lifts = aggregate(res.records), lifts(res.records)
        res.wall_seconds = round(time.monotonic() - start, 1)

    def on_cell(index: int, records: list[RunRecord]) -> None:
        finished[index] = {r.method: r for r in records}
        for rec in records:
            log("  " + _progress(rec))
        assemble()
        if on_record is not None:
            on_record(res)

    drive(cells, pool, keep_going, on_cell, log)
    assemble()
    return res


def run_eval_on_ray(spec: EvalSpec, cfg: Config, workers: int, address: str | None = None, *,
                    on_record: Callable[[Results], None] | None = None, previous: Results | None = None,
                    keep_going: bool = True, log: Callable[[str], None] = lambda _msg: None) -> Results:
    """Start (or join) Ray, start `workers` eval workers, run the spec over them, shut down."""
    with RaySession(cfg.ray, workers, address) as session:
        pool = RayPool(workers, lambda name, _slot: session.spawn(EvalWorker, cfg, cfg, name), session.kill)
        try:
            pool.ready(timeout=max(cfg.ray.call_timeout_s, 600.0))
            log(f"{workers} worker(s) ready")
            return run_eval_on_workers(spec, cfg, pool, on_record=on_record, previous=previous,
                                       keep_going=keep_going, log=log)
        finally:
            pool.close()

