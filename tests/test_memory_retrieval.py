"""CORE retrieval scoring: utility on neighbours, similarity weighting, use counts, UCB on/off, budget."""

from __future__ import annotations

import math

import pytest
from insightloop.core.config import MemoryConfig
from insightloop.core.task import Task
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.records import Insight
from insightloop.memory.retrieval import Candidate, NeighbourCredit, score_candidates, select
from insightloop.memory.store import MemoryStore

SCORE = {"ucb_c": 0.5, "sim_weight": 0.5, "prior_uses": 1.0}


def _cand(iid: str, sim: float, credit: list[tuple[float, int, float]] = (), text: str = "x") -> Candidate:
    return Candidate(
        insight=Insight(id=iid, text=text, status="active"),
        similarity=sim,
        credit=[
            NeighbourCredit(task_id=f"t{j}", similarity=s, uses=n, utility_sum=u)
            for j, (s, n, u) in enumerate(credit)
        ],
    )


def _order(cands: list[Candidate], train: bool = False, **kw: float) -> list[str]:
    return [s.insight.id for s in score_candidates(cands, train=train, **{**SCORE, **kw})]


def test_utility_on_neighbours_orders_insights():
    good = _cand("good", 0.3, [(0.9, 4, 2.0)])
    bad = _cand("bad", 0.3, [(0.9, 4, -2.0)])
    scored = score_candidates([bad, good], train=False, **SCORE)
    assert [s.insight.id for s in scored] == ["good", "bad"]
    assert scored[0].utility == pytest.approx(0.5) and scored[1].utility == pytest.approx(-0.5)
    assert scored[0].n_eff == pytest.approx(3.6)
    # At evaluation the harmful one falls below the score floor and is not retrieved at all.
    assert [s.insight.id for s in select(scored, k=5, token_budget=None, min_score=0.0)] == ["good"]


def test_neighbour_utility_is_weighted_by_similarity():
    # Helps on the near neighbour, hurts on the far one: positive overall; swapped sims: negative.
    near_helps = score_candidates([_cand("a", 0.0, [(0.9, 1, 1.0), (0.1, 1, -1.0)])], train=False, **SCORE)[0]
    far_helps = score_candidates([_cand("a", 0.0, [(0.1, 1, 1.0), (0.9, 1, -1.0)])], train=False, **SCORE)[0]
    assert near_helps.utility == pytest.approx(0.8)
    assert far_helps.utility == pytest.approx(-0.8)
    # Negative similarity carries no weight.
    ignored = score_candidates([_cand("a", 0.0, [(0.9, 1, 1.0), (-0.5, 5, -5.0)])], train=False, **SCORE)[0]
    assert ignored.utility == pytest.approx(1.0)


def test_neighbour_utility_is_weighted_by_use_count():
    s = score_candidates([_cand("a", 0.0, [(0.5, 4, 2.0), (0.5, 1, -1.0)])], train=False, **SCORE)[0]
    assert s.utility == pytest.approx((0.5 * 2.0 - 0.5 * 1.0) / (0.5 * 5))
    # More evidence means more trust in it (less weight on text similarity).
    few = score_candidates([_cand("a", 0.0, [(1.0, 1, 0.5)])], train=False, **SCORE)[0]
    many = score_candidates([_cand("a", 0.0, [(1.0, 9, 4.5)])], train=False, **SCORE)[0]
    assert few.score == pytest.approx(0.5 * 0.5) and many.score == pytest.approx(0.9 * 0.5)


def test_uncredited_insights_fall_back_to_text_similarity():
    assert _order([_cand("far", 0.1), _cand("near", 0.8), _cand("mid", 0.4)]) == ["near", "mid", "far"]
    # Well-measured harm outranks nothing: an uncredited similar insight beats it.
    assert _order([_cand("harm", 0.9, [(0.9, 10, -5.0)]), _cand("new", 0.2)]) == ["new", "harm"]


def test_ucb_bonus_only_when_training():
    tried = _cand("tried", 0.1, [(1.0, 10, 1.0)])
    untried = _cand("untried", 0.1)
    assert _order([tried, untried], train=False) == ["tried", "untried"]
    assert _order([tried, untried], train=True) == ["untried", "tried"]
    scored = score_candidates([tried, untried], train=True, **SCORE)
    bonus = {s.insight.id: s.bonus for s in scored}
    assert bonus["untried"] == pytest.approx(0.5 * math.sqrt(math.log(12.0)))
    assert bonus["tried"] == pytest.approx(0.5 * math.sqrt(math.log(12.0) / 11.0))
    assert all(s.bonus == 0 for s in score_candidates([tried, untried], train=False, **SCORE))
    assert _order([tried, untried], train=True, ucb_c=0.0) == ["tried", "untried"]


def test_select_respects_k_budget_and_floor():
    long_text = "w" * 400  # 100 tokens
    cands = [
        _cand("a", 0.9, text=long_text),
        _cand("b", 0.8, text="short"),
        _cand("c", 0.7, text="tiny"),
        _cand("d", -0.5, text="neg"),
    ]
    scored = score_candidates(cands, train=False, **SCORE)
    assert [s.insight.id for s in select(scored, 2, None, 0.0)] == ["a", "b"]
    assert [s.insight.id for s in select(scored, 5, 50, 0.0)] == ["b", "c"]
    assert [s.insight.id for s in select(scored, 5, None, None)] == ["a", "b", "c", "d"]


# ---- the same, end to end through the store -------------------------------------------------
T_NEAR = Task(id="near", family="digits", prompt="compute the sum of the digits of 4821")
T_FAR = Task(id="far", family="words", prompt="sort these words alphabetically: pear apple fig")
QUERY = Task(id="q", family="digits", prompt="compute the sum of the digits of 9377")


@pytest.fixture
def store(tmp_path):
    cfg = MemoryConfig(top_k=3, prompt_token_budget=0, ucb_c=0.5)
    with MemoryStore.open(tmp_path, HashingEmbedder(), cfg) as s:
        yield s


def _active(store: MemoryStore, text: str) -> str:
    ins, new = store.add_insight(text, status="active")
    assert new
    return ins.id


def test_store_retrieval_prefers_utility_on_similar_problems(store):
    a = _active(store, "write out every intermediate total")
    b = _active(store, "double check the final number")
    for _ in range(3):
        store.credit([a], T_NEAR, reward=1.0, baseline=0.0, episode_id="e")
        store.credit([b], T_FAR, reward=1.0, baseline=0.0, episode_id="e")
    got = store.explain_retrieval(QUERY, train=False)
    assert [s.insight.id for s in got][:2] == [a, b]
    assert got[0].n_eff > got[1].n_eff


def test_store_retrieval_drops_harmful_at_eval_and_explores_in_training(store):
    harmful = _active(store, "guess quickly without computing")
    fresh = _active(store, "unrelated advice about rhyming poems")
    for _ in range(4):
        store.credit([harmful], T_NEAR, reward=0.0, baseline=1.0, episode_id="e")
    assert harmful not in [i.id for i in store.retrieve(QUERY, train=False)]
    trained = store.explain_retrieval(QUERY, train=True)
    assert trained[0].insight.id == fresh and trained[0].bonus > 0


def test_store_retrieval_skips_pending_and_retired_and_keeps_budget(store):
    pending, _ = store.add_insight("compute digits one at a time")
    retired = _active(store, "compute the digits sum twice")
    store.set_status(retired, "retired", "test")
    long_id = _active(store, "compute the sum of the digits carefully " + "and slowly " * 30)
    short_id = _active(store, "sum of the digits: add left to right")
    ids = [i.id for i in store.retrieve(QUERY, k=5, token_budget=40)]
    assert pending.id not in ids and retired not in ids
    assert short_id in ids and long_id not in ids
    assert long_id in [i.id for i in store.retrieve(QUERY, k=5, token_budget=0)]
    assert store.retrieve(QUERY, k=0) == []
