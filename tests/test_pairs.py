"""Pair selection (anchor, hard and soft negatives) and divergence finding on hand-built trees."""

from __future__ import annotations

import random
from collections import Counter

from insightloop.agent.learn.pairs import (
    anchor_of,
    divergence_step,
    failures_of,
    memory_pair,
    select_pairs,
    sibling_contrast,
    steps_of,
)
from insightloop.core.episode import SearchTree, Trajectory


def _t(text: str, reward: float, steps: list[str] | None = None, visits: int = 1, value: float = 0.0,
       node_ids: list[int] | None = None) -> Trajectory:
    return Trajectory(text=text, reward=reward, steps=steps or [], visits=visits, value=value,
                      node_ids=node_ids or [])


def test_anchor_is_shortest_correct_and_ties_go_to_higher_value() -> None:
    trajs = [_t("a\nb\nc", 1.0), _t("x\ny", 1.0, value=0.2), _t("p\nq", 1.0, value=0.9), _t("w", 0.0)]
    anchor = anchor_of(trajs)
    assert anchor is not None and anchor.text == "p\nq"
    assert anchor_of([_t("w", 0.0)]) is None


def test_select_pairs_mixes_hard_and_soft_at_the_requested_fraction() -> None:
    anchor = _t("s1\nAnswer: 4", 1.0)
    hard = [_t(f"wrong {i}\nmore\nAnswer: {i}", 0.0, visits=i) for i in range(10)]
    soft = [_t(f"long {i}\nmore\nstill\nAnswer: 4", 1.0) for i in range(10)]
    pairs = select_pairs([anchor, *hard, *soft], 10, 0.7, random.Random(0))
    kinds = Counter(p.kind for p in pairs)
    assert kinds == {"hard": 7, "soft": 3}
    assert all(p.positive.text == anchor.text for p in pairs)
    assert all(not p.negative.correct for p in pairs if p.kind == "hard")
    assert all(p.negative.correct and len(steps_of(p.negative)) > 2 for p in pairs if p.kind == "soft")
    assert len({p.negative.text for p in pairs}) == 10  # no negative is used twice


def test_one_kind_fills_in_when_the_other_runs_out() -> None:
    anchor = _t("a", 1.0)
    trajs = [anchor, _t("b", 0.0), _t("c", 0.0), _t("d\ne", 1.0)]
    pairs = select_pairs(trajs, 10, 0.7, random.Random(1))
    assert Counter(p.kind for p in pairs) == {"hard": 2, "soft": 1}
    only_soft = select_pairs([anchor, _t("d\ne", 1.0), _t("f\ng", 1.0)], 4, 0.7, random.Random(1))
    assert [p.kind for p in only_soft] == ["soft", "soft"]
    assert select_pairs([_t("b", 0.0)], 5, 0.7, random.Random(0)) == []  # no anchor, no tree pairs


def test_hard_negatives_are_sampled_by_visit_count() -> None:
    trajs = [_t("ok", 1.0), _t("often", 0.0, visits=50), _t("rarely", 0.0, visits=0)]
    picks = Counter(select_pairs(trajs, 1, 1.0, random.Random(s))[0].negative.text for s in range(300))
    assert picks["often"] > 250 and picks["rarely"] > 0
    fails = Counter(failures_of(trajs, 1, random.Random(s))[0].text for s in range(300))
    assert fails["often"] > 250


def _tree() -> SearchTree:
    tree = SearchTree()
    a = tree.add(0, "Step 1: add.\n\n", visits=4, value_sum=3.0, reward=1.0)
    b = tree.add(0, "Step 1: guess.\n\n", visits=3, value_sum=0.0, reward=0.0)
    tree.nodes[0].visits = 7
    tree.add(a.id, "Step 2: carry.\n\n", visits=2, value_sum=2.0, reward=1.0)
    tree.add(a.id, "Step 2: forget.\n\n", visits=2, value_sum=1.0, reward=0.0)
    tree.add(b.id, "Step 2: more.\n\n", visits=1, value_sum=0.0, reward=0.0)
    return tree


def _traj(tree: SearchTree, leaf: int, reward: float) -> Trajectory:
    path = tree.path(leaf)
    return Trajectory(node_ids=[n.id for n in path], steps=[n.step_text for n in path],
                      text=tree.path_text(leaf) + "Answer: 1", reward=reward, visits=tree.nodes[leaf].visits)


def test_divergence_by_node_and_sibling_contrast() -> None:
    tree = _tree()
    good, late_bad, early_bad = _traj(tree, 3, 1.0), _traj(tree, 4, 0.0), _traj(tree, 5, 0.0)
    assert divergence_step(good, late_bad) == 1
    assert divergence_step(good, early_bad) == 0
    sib = sibling_contrast(tree, good, late_bad, 1)
    assert [b.node_id for b in sib] == [3, 4] and sib[0].value > sib[-1].value
    root_sib = sibling_contrast(tree, good, early_bad, 0)
    assert [b.node_id for b in root_sib] == [1, 2]
    pairs = select_pairs([good, late_bad], 1, 1.0, random.Random(0), tree)
    assert pairs[0].divergence == 1 and pairs[0].shared_prefix == ["Step 1: add."]
    assert [b.node_id for b in pairs[0].siblings] == [3, 4]


def test_equal_sibling_values_give_no_step_contrast() -> None:
    tree = SearchTree()
    tree.add(0, "Step 1: a\n\n", visits=1, value_sum=1.0)
    tree.add(0, "Step 1: b\n\n", visits=1, value_sum=1.0)
    t1, t2 = _traj(tree, 1, 1.0), _traj(tree, 2, 0.0)
    assert sibling_contrast(tree, t1, t2, 0) == []


def test_divergence_by_text_for_whole_attempts() -> None:
    a = _t("Step 1: same\nStep 2: good\nAnswer: 3", 1.0)
    b = _t("Step 1:  SAME\nStep 2: bad\nAnswer: 4", 0.0)
    assert divergence_step(a, b) == 1
    assert divergence_step(a, _t("Step 1: same", 0.0)) == 1  # a prefix diverges where it ends


def test_memory_pair_uses_the_stored_success_and_drops_tree_ids() -> None:
    fail = _t("Step 1: guess\nAnswer: 5", 0.0, node_ids=[2])
    pair = memory_pair(fail, "Step 1: compute\nAnswer: 7", "other-task")
    assert pair.kind == "memory" and pair.positive.correct and pair.source_task == "other-task"
    assert pair.negative.node_ids == [] and pair.divergence == 0 and pair.siblings == []
