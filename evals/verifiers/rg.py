"""Reasoning-gym tasks, scored by the generating dataset's own `score_answer`.

Answers are taken raw (every line after the last `Answer:`), since grids and move lists span lines
and their spacing is content. Datasets are rebuilt deterministically from their seed and cached.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.base import BaseVerifier
from insightloop.evals.verifiers.extract import extract_answer


@lru_cache(maxsize=32)
def rg_dataset(name: str, size: int, seed: int) -> Any:
    """A reasoning-gym dataset; entries are generated on access, deterministically from the seed."""
    import reasoning_gym

    return reasoning_gym.create_dataset(name, size=size, seed=seed)


class ReasoningGymVerifier(BaseVerifier):
    """Scored by the reasoning-gym dataset's own `score_answer`.

    The entry is regenerated from (`rg_dataset`, `rg_size`, `rg_seed`, `rg_index`) in `meta`, since a
    JSON round-trip of the stored `rg_entry` can change types some scorers compare (tuples to lists);
    the stored entry is used when those keys are absent."""

    def extract(self, task: Task, completion: str) -> str | None:
        return extract_answer(completion, raw=True)

    def check(self, task: Task, answer: str) -> Reward:
        meta = task.meta
        if {"rg_size", "rg_seed", "rg_index"} <= meta.keys():
            data = rg_dataset(meta["rg_dataset"], meta["rg_size"], meta["rg_seed"])
            scorer, entry = data.score_answer, data[meta["rg_index"]]
        else:
            import reasoning_gym

            scorer, entry = reasoning_gym.get_score_answer_fn(meta["rg_dataset"]), meta["rg_entry"]
        try:
            score = float(scorer(answer, entry))
        except Exception as exc:  # a dataset's own scorer may choke on any model text
            return Reward(score=0.0, parsed_answer=answer, error=f"score_answer failed: {type(exc).__name__}")
        return Reward(score=min(1.0, max(0.0, score)), parsed_answer=answer)
