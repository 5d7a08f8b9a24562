"""What a fold learns from, read from the run directory, and the held-out problems its gate measures on.

`load_fold_data` gathers the run's episodes (`memory.episodes`), verified synthesized chains
(`memory.chains`), the memory's admitted worked examples (`memory.examples`) and, with
`fold.reference_answers`, the labeled problems' reference answers, then holds out a
seeded slice of the problems for the gate. Nothing about a held-out problem reaches the training
data: its episodes, its chains and any worked example of it are left out, so the gate's paired
before/after comparison measures the weights on problems the fold never saw.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

from insightloop.agent.search.domain import ATTEMPT_PRIMER
from insightloop.core.config import Config
from insightloop.core.episode import Chain, Episode
from insightloop.core.task import Task
from insightloop.memory.chains import load_chains
from insightloop.memory.episodes import load_episodes
from insightloop.memory.examples import load_examples
from insightloop.memory.records import Insight
from insightloop.rl.data import WorkedExample
from pydantic import BaseModel, Field


class FoldData(BaseModel):
    """What a fold learns from, and the held-out tasks its gate measures on."""

    episodes: list[Episode] = Field(default_factory=list)
    chains: list[Chain] = Field(default_factory=list)
    examples: list[WorkedExample] = Field(default_factory=list, description="admitted worked examples")
    validation: list[Task] = Field(default_factory=list)
    insights: dict[str, list[str]] = Field(default_factory=dict, description="task id -> insight texts")


def _rank(task_id: str, seed: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{task_id}".encode()).digest()[:8], "big")


def held_out(tasks: Sequence[Task], n: int, seed: int) -> list[Task]:
    """Up to `n` of `tasks` from the seeded third whose hash is divisible by 3 (the lowest hashes
    first; the lowest-hash task when no task is in that third; all of them when there is only one).

    The choice depends on each task's own hash, not on which other tasks the run has seen, so as a
    run grows and folds again, a task that an earlier fold trained on never becomes a held-out one:
    the gate of every fold measures problems no fold in the chain learned from. For the same reason
    no subset of `tasks` has more held out than `tasks` itself: a budget that pays for the gate
    before knowing which problems will have episodes reserves for this many."""
    unique = {t.id: t for t in tasks}
    if len(unique) < 2:
        return list(unique.values())
    rank = {i: _rank(i, seed) for i in unique}
    ranked = sorted(unique, key=rank.__getitem__)
    third = [i for i in ranked if rank[i] % 3 == 0]
    return [unique[i] for i in sorted(third[:n] if third else ranked[:1])]


def split_validation(episodes: Sequence[Episode], n: int, seed: int) -> tuple[list[Episode], list[Task]]:
    """The episodes of the tasks `held_out` does not pick, and the picked tasks (the gate's); a run of
    one problem keeps its episodes too, as there is nothing else to learn from."""
    val = held_out([ep.task for ep in episodes], n, seed)
    if len({ep.task.id for ep in episodes}) < 2:
        return list(episodes), val
    ids = {t.id for t in val}
    return [ep for ep in episodes if ep.task.id not in ids], val


def worked_examples(items: Sequence[Insight], tasks: dict[str, Task]) -> list[WorkedExample]:
    """The memory's worked examples as fold data. An example whose source problem the run has seen
    keeps that task (so it can serve as a GRPO off-policy completion, the verifier knowing the
    answer); otherwise its problem text becomes an unlabeled task, fit for SFT only."""
    out = []
    for ins in items:
        if ins.kind != "example" or not ins.solution.strip():
            continue
        task = next((tasks[t] for t in ins.source_tasks if t in tasks), None)
        if task is None:
            task = Task(id=f"example:{ins.id}", family=ins.family or "example", prompt=ins.text)
        out.append(WorkedExample(task=task, solution=ins.solution, insight_id=ins.id))
    return out


def reference_examples(tasks: Sequence[Task]) -> list[WorkedExample]:
    """Each labeled problem's reference answer as an answer-only worked example (one per problem).

    The completion is the answer line the solver's prompt asks for, after the attempt primer; an
    answer of several lines goes below `Answer:` as the prompt says."""
    out, seen = [], set()
    for task in tasks:
        answer = (task.answer or "").strip()
        if not answer or task.id in seen:
            continue
        seen.add(task.id)
        line = f"Answer: {answer}" if "\n" not in answer else f"Answer:\n{answer}"
        out.append(WorkedExample(task=task, solution=f"{ATTEMPT_PRIMER} {line}",
                                 insight_id=f"reference:{task.id}"))
    return out


def without_held_out(data: FoldData) -> FoldData:
    """`data` with every chain and worked example of a validation problem (by id or text) removed."""
    ids = {t.id for t in data.validation}
    texts = {" ".join(t.prompt.split()) for t in data.validation}

    def held(task: Task) -> bool:
        return task.id in ids or " ".join(task.prompt.split()) in texts

    return data.model_copy(update={"chains": [c for c in data.chains if not held(c.task)],
                                   "examples": [x for x in data.examples if not held(x.task)]})


def load_fold_data(run_dir: str | Path, cfg: Config, labeled: Sequence[Task] = ()) -> FoldData:
    """Episodes, chains and worked examples of the run directory, with a seeded held-out validation
    slice of up to `fold.gate_slice` problems that the training data never touches.

    `labeled`: further labeled problems whose reference answers a fold with `fold.reference_answers`
    learns too, though the run holds no episode of them (a budget that ran out before every training
    problem had its episode); the held-out ones are dropped like any other."""
    episodes = load_episodes(run_dir)
    train, val = split_validation(episodes, cfg.fold.gate_slice, cfg.seed)
    tasks = {ep.task.id: ep.task for ep in episodes}
    examples = worked_examples(load_examples(run_dir), tasks)
    if cfg.fold.reference_answers:
        examples += reference_examples([*(ep.task for ep in train), *labeled])
    data = FoldData(episodes=train, chains=load_chains(run_dir), examples=examples, validation=val)
    return without_held_out(data)
