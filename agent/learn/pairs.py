"""Contrast pairs from a search episode: which attempts to show the analyst, and where they diverge.

Following CRPS: the anchor is the shortest correct trajectory (ties: higher path value); hard
negatives are incorrect trajectories sampled in proportion to their visit counts (the search
believed in them); soft negatives are correct but longer ones. `select_pairs` returns up to K pairs,
a `hard_fraction` of them hard. When an episode has no correct attempt, `memory_pair` pairs the
failure with a stored correct attempt of a similar problem instead.

For each pair the divergence step is the first line where the two attempts differ; at the first
differing tree node, the sibling branches whose values differ give the step-level contrast.
"""

from __future__ import annotations

import random
from typing import Literal

from insightloop.core.episode import SearchTree, Trajectory
from pydantic import BaseModel, Field

PairKind = Literal["hard", "soft", "memory"]


class Branch(BaseModel):
    """One child of the divergence point, with its search statistics."""

    node_id: int
    step_text: str
    visits: int
    value: float
    reward: float | None = None


class Pair(BaseModel):
    """A better and a worse attempt, where they split, and the sibling branches there."""

    kind: PairKind
    positive: Trajectory
    negative: Trajectory
    divergence: int = Field(ge=0, description="index of the first step that differs")
    siblings: list[Branch] = Field(default_factory=list)
    source_task: str | None = Field(None, description="task id of a memory positive, if not this task")
    rejection: str = Field("", description="why the verifier rejected the negative (no answer, wrong value)")

    @property
    def shared_prefix(self) -> list[str]:
        return steps_of(self.positive)[: self.divergence]


def steps_of(traj: Trajectory) -> list[str]:
    """The attempt as the analyst reads it: its non-empty lines (tree steps and rollout alike)."""
    return [line.strip() for line in traj.text.splitlines() if line.strip()]


def _norm(step: str) -> str:
    return " ".join(step.lower().split())


def divergence_step(a: Trajectory, b: Trajectory) -> int:
    """Index of the first differing line (a whole-attempt sample shares a node but not its text)."""
    sa, sb = steps_of(a), steps_of(b)
    for i, (x, y) in enumerate(zip(sa, sb, strict=False)):
        if _norm(x) != _norm(y):
            return i
    return min(len(sa), len(sb))


def node_divergence(a: Trajectory, b: Trajectory) -> int | None:
    """Depth of the first differing tree node, when both attempts are paths of the same tree."""
    if not (a.node_ids and b.node_ids):
        return None
    for i, (x, y) in enumerate(zip(a.node_ids, b.node_ids, strict=False)):
        if x != y:
            return i
    return min(len(a.node_ids), len(b.node_ids))


def sibling_contrast(tree: SearchTree | None, pos: Trajectory, neg: Trajectory, at: int) -> list[Branch]:
    """Children of the divergence point that were visited, best value first, if their values differ."""
    if tree is None or not pos.node_ids or at > len(pos.node_ids):
        return []
    parent = 0 if at == 0 else pos.node_ids[at - 1]
    if neg.node_ids[:at] != pos.node_ids[:at] or parent >= len(tree.nodes):
        return []
    kids = [tree.nodes[c] for c in tree.nodes[parent].children if tree.nodes[c].visits > 0]
    branches = sorted(
        (Branch(node_id=n.id, step_text=n.step_text, visits=n.visits, value=n.value, reward=n.reward)
         for n in kids),
        key=lambda b: (-b.value, -b.visits),
    )
    if len({round(b.value, 6) for b in branches}) < 2:
        return []
    return branches


def _length(t: Trajectory) -> tuple[int, int]:
    return (len(steps_of(t)), len(t.text))


def anchor_of(trajs: list[Trajectory]) -> Trajectory | None:
    """The shortest correct trajectory; ties go to the higher path value."""
    correct = [t for t in trajs if t.correct]
    return min(correct, key=lambda t: (*_length(t), -t.value), default=None)


def _weighted_sample(items: list[Trajectory], k: int, rng: random.Random) -> list[Trajectory]:
    """k distinct items, drawn without replacement with weight visits + 1."""
    pool, out = list(items), []
    while pool and len(out) < k:
        pick = rng.choices(range(len(pool)), weights=[t.visits + 1 for t in pool])[0]
        out.append(pool.pop(pick))
    return out


def _distinct(trajs: list[Trajectory]) -> list[Trajectory]:
    seen: set[str] = set()
    out = []
    for t in trajs:
        key = _norm(t.text)
        if key not in seen:
            seen.add(key)
            out.append(t)
    return out


def select_pairs(trajs: list[Trajectory], k: int, hard_fraction: float, rng: random.Random,
                 tree: SearchTree | None = None) -> list[Pair]:
    """Up to k (anchor, negative) pairs, about `hard_fraction` hard; the other kind fills any gap."""
    anchor = anchor_of(trajs)
    if anchor is None:
        return []
    others = _distinct([t for t in trajs if t is not anchor and _norm(t.text) != _norm(anchor.text)])
    hard = [t for t in others if not t.correct]
    soft = sorted((t for t in others if t.correct and _length(t) > _length(anchor)), key=_length)
    n_hard = min(len(hard), round(k * hard_fraction))
    n_soft = min(len(soft), k - n_hard)
    n_hard = min(len(hard), k - n_soft)  # hard negatives fill in when soft ones run out
    chosen = [("hard", t) for t in _weighted_sample(hard, n_hard, rng)]
    chosen += [("soft", t) for t in soft[:n_soft]]
    return [make_pair(kind, anchor, neg, tree) for kind, neg in chosen]  # type: ignore[arg-type]


def make_pair(kind: PairKind, pos: Trajectory, neg: Trajectory, tree: SearchTree | None = None,
              source_task: str | None = None) -> Pair:
    """Build a pair, finding its divergence step and the sibling contrast there."""
    node_at = node_divergence(pos, neg)
    siblings = sibling_contrast(tree, pos, neg, node_at) if node_at is not None else []
    return Pair(kind=kind, positive=pos, negative=neg, divergence=divergence_step(pos, neg),
                siblings=siblings, source_task=source_task)


def memory_pair(failure: Trajectory, correct_text: str, source_task: str | None) -> Pair:
    """Pair a failure with a stored correct attempt (of a similar problem) when the tree has none."""
    pos = Trajectory(text=correct_text, reward=1.0)
    neg = failure.model_copy(update={"node_ids": []})  # the stored attempt is not in this tree
    return make_pair("memory", pos, neg, None, source_task)


def failures_of(trajs: list[Trajectory], k: int, rng: random.Random) -> list[Trajectory]:
    """Up to k distinct failed attempts, sampled by visit count (the ones the search believed in)."""
    return _weighted_sample(_distinct([t for t in trajs if not t.correct]), k, rng)
