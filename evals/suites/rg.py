"""Any reasoning-gym dataset as a suite (`rg/<dataset>`), generated from a seed.

Each task keeps its reasoning-gym entry in `meta["rg_entry"]`, with the dataset name, size, seed and
index that regenerate it exactly, so the dataset's own `score_answer` can re-score an answer at any
time (also after the task went through JSON).
"""

from __future__ import annotations

import json
from typing import Any

from insightloop.core.task import Task
from insightloop.evals.verifiers import answer_instruction, rg_dataset


def dataset_names() -> list[str]:
    """Every registered reasoning-gym dataset name, sorted (`composite` is a mixer needing a config)."""
    from reasoning_gym.factory import DATASETS

    return sorted(name for name in DATASETS if name != "composite")


def _jsonable(entry: dict[str, Any]) -> dict[str, Any]:
    # Tasks are persisted as JSON; entries round-trip exactly when they already are JSON.
    return json.loads(json.dumps(entry, default=str))


def load(dataset: str, size: int = 200, seed: int = 0) -> list[Task]:
    """`size` tasks of `dataset`, generated deterministically from `seed`."""
    if dataset not in dataset_names():
        raise ValueError(f"unknown reasoning-gym dataset {dataset!r}; "
                         f"`insightloop suites --rg` lists the {len(dataset_names())} available")
    data = rg_dataset(dataset, size, seed)
    tasks = []
    for i in range(size):
        entry = _jsonable(data[i])
        answer = entry.get("answer")
        tasks.append(Task(id=f"rg/{dataset}/{seed}/{i}", family=f"rg/{dataset}", verifier="rg",
                          prompt=f"{entry['question']}\n\n{answer_instruction('rg')}",
                          answer=None if answer is None else str(answer),
                          meta={"rg_dataset": dataset, "rg_size": size, "rg_seed": seed,
                                "rg_index": i, "rg_entry": entry}))
    return tasks
