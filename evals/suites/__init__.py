"""Task suites, one file each, and the three calls the rest of the project uses.

Suite names as written on the command line: `bbh/<task>`, `gsm8k`, `game24`, `countdown`,
`equation_balancer`, `rg/<dataset>` (any reasoning-gym dataset) and `jsonl:PATH` (a user's file).
Bundled data is package data of `insightloop.evals`, read through importlib.resources (`bundled`).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

from insightloop.core.task import Task
from insightloop.evals.suites import bbh, countdown, equation_balancer, game24, gsm8k, jsonl, rg

log = logging.getLogger(__name__)

SUITE_FORMS = "bbh/<task>, gsm8k, game24, countdown, equation_balancer, rg/<dataset>, jsonl:PATH"
RG_DEFAULT_SIZE = 200


def load_suite(name: str, limit: int | None = None, seed: int = 0, skip_bad: bool = False,
               fewshot: bool = False) -> list[Task]:
    """The tasks of suite `name`, in the data's own order, at most `limit` of them.

    `seed` seeds reasoning-gym generation (and `limit` sets its size, default 200); `skip_bad` skips
    bad lines of a JSONL file (logged; use `jsonl.read_task_lines` to get them); `fewshot` prepends
    the bundled chain-of-thought examples to BBH prompts.
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of tasks, got {limit}")
    tasks = _dispatch(name, limit, seed, skip_bad, fewshot)
    return tasks[:limit] if limit is not None else tasks


def _dispatch(name: str, limit: int | None, seed: int, skip_bad: bool, fewshot: bool) -> list[Task]:
    if name.startswith("jsonl:"):
        tasks, problems = jsonl.read_task_lines(Path(name.removeprefix("jsonl:")), skip_bad)
        for problem in problems:
            log.warning("skipped %s", problem)
        return tasks
    if name.startswith("bbh/"):
        return bbh.load(name.removeprefix("bbh/"), fewshot=fewshot)
    if name.startswith("rg/"):
        return rg.load(name.removeprefix("rg/"), size=limit or RG_DEFAULT_SIZE, seed=seed)
    simple = {"gsm8k": gsm8k.load, "game24": game24.load, "countdown": countdown.load,
              "equation_balancer": equation_balancer.load}
    if name not in simple:
        raise ValueError(f"unknown suite {name!r}; use one of: {SUITE_FORMS} (see `insightloop suites`)")
    return simple[name]()


def list_suites() -> list[tuple[str, int | None]]:
    """Every bundled suite with its size; procedural and user suites (rg, jsonl) have size None."""
    rows: list[tuple[str, int | None]] = [(f"bbh/{t}", bbh.size(t)) for t in bbh.task_names()]
    rows += [("gsm8k", gsm8k.size()), ("game24", game24.size()), ("countdown", countdown.size()),
             ("equation_balancer", equation_balancer.size())]
    return rows + [("rg/<dataset>", None), ("jsonl:PATH", None)]


def split(tasks: list[Task], n_train: int, n_test: int, seed: int,
          cap_test: bool = False) -> tuple[list[Task], list[Task]]:
    """Disjoint train and test sets drawn by a seeded shuffle: the same inputs give the same split.
    With `cap_test`, a suite smaller than asked gives all its other problems as the test set."""
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    if cap_test and n_train < len(tasks):
        n_test = min(n_test, len(tasks) - n_train)
    if n_train + n_test > len(tasks):
        raise ValueError(f"cannot split {len(tasks)} tasks into {n_train} train + {n_test} test")
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    train = [tasks[i] for i in order[:n_train]]
    test = [tasks[i] for i in order[n_train:n_train + n_test]]
    return train, test
