"""Every harness method, run for real at a tiny budget: the embedded SmolLM2 policy, MiniLM and FAISS,
TRL GRPO, and GEPA through litellm against `transformers serve` on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from insightloop.agent.search.domain import SYSTEM_PROMPT
from insightloop.core.config import load_config
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.records import EvalSpec, Results
from insightloop.evals.harness.report import load_results, write_report
from insightloop.evals.harness.runner import run_eval

pytestmark = pytest.mark.real

SUITE = "bbh/boolean_expressions"
TINY = [
    "policy.threads=1",
    "search.strategy=sample",
    "search.rollouts=2",
    "search.answer_tokens=32",
    "loop.baseline_samples=1",
    "loop.pairs=1",
    "loop.max_candidates=1",
    "loop.analyst_tokens=40",
    "loop.synthesize=false",
    "fold.grpo.group_size=2",
    "fold.batch_size=1",
    "fold.max_completion_tokens=24",
    "fold.gate_max_tokens=32",
]


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Context]:
    c = Context(load_config(None, TINY), workdir=tmp_path_factory.mktemp("eval"))
    yield c
    c.close()


def _run(ctx: Context, methods: list[str], budget: int, n_train: int = 3) -> Results:
    spec = EvalSpec(suites=[SUITE], methods=methods, n_train=n_train, n_test=2, budget=budget, seeds=[0])
    return run_eval(spec, ctx, keep_going=False)


def _check(res: Results, budget: int) -> None:
    train = {tuple(r.train_ids) for r in res.records}
    test = {tuple(r.test_ids) for r in res.records}
    assert len(train) == 1 and len(test) == 1
    for r in res.records:
        assert r.error is None
        assert r.rollouts <= budget
        assert len(r.scores) == len(r.answers) == 2 and 0.0 <= r.accuracy <= 1.0
        assert r.prompt_tokens_per_problem > 0


def test_prompt_methods_for_real(ctx: Context, tmp_path: Path) -> None:
    res = _run(ctx, ["none", "best-of-n", "episodic-rag", "reflect-success", "core"], budget=6)
    _check(res, 6)
    by = {r.method: r for r in res.records}
    assert by["none"].rollouts == 0
    assert by["best-of-n"].rollouts == by["episodic-rag"].rollouts == by["reflect-success"].rollouts == 6
    assert by["core"].rollouts > 0 and by["core"].detail["episodes"] >= 0
    assert by["episodic-rag"].detail["attempts_stored"] > 0
    # Retrieved attempts make longer prompts than the bare model's.
    assert by["episodic-rag"].prompt_tokens_per_problem > by["none"].prompt_tokens_per_problem
    paths = write_report(res, tmp_path / "out")
    assert load_results(paths["json"]).records == res.records
    assert paths["curves"].stat().st_size > 0 and paths["tokens"].stat().st_size > 0


def test_grpo_alone_for_real(ctx: Context) -> None:
    res = _run(ctx, ["grpo"], budget=4)
    _check(res, 4)
    rec = res.records[0]
    assert rec.rollouts == 4 and rec.detail["steps"] == 2.0  # group of 2 × 1 prompt × 2 steps


def test_core_with_fold_for_real(ctx: Context) -> None:
    res = _run(ctx, ["core+fold"], budget=6)
    _check(res, 6)
    rec = res.records[0]
    assert rec.detail["fold"] in ("accepted", "rejected"), rec.detail
    assert rec.detail["fold_rollouts"] == 2 + 2  # one GRPO group of 2, and the gate's old + new try


def test_core_with_an_sft_fold_of_the_labels_for_real(tmp_path: Path) -> None:
    """`core+fold` as the fold-lift run uses it: SFT on what the Learner verified and every training
    problem's reference answer, the gate holding out one of three, only its attempts charged."""
    cfg = load_config(None, [*TINY, "fold.method=sft", "fold.steps=2", "fold.reference_answers=true"])
    c = Context(cfg, workdir=tmp_path)
    try:
        res = _run(c, ["core+fold"], budget=4)
    finally:
        c.close()
    _check(res, 4)
    rec = res.records[0]
    assert rec.detail["fold"] in ("accepted", "rejected"), rec.detail
    assert rec.detail["fold_method"] == "sft" and rec.detail["fold_steps"] == 2
    assert rec.detail["fold_rollouts"] == 2  # the gate's old + new try on its one held-out problem


def test_gepa_against_a_local_server_for_real(ctx: Context) -> None:
    res = _run(ctx, ["gepa"], budget=8, n_train=2)
    _check(res, 8)
    rec = res.records[0]
    assert rec.detail["metric_calls"] == rec.rollouts >= 2  # the seed prompt's validation pass at least
    assert rec.detail["candidates"] >= 1
    assert rec.detail["prompt_changed"] == (rec.detail["best_prompt"].strip() != SYSTEM_PROMPT.strip())
