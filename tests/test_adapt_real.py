"""End to end on the embedded SmolLM2 and MiniLM: the loop learns an admitted insight with provenance."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from insightloop.apps.adapt import SUMMARY_KEYS, adapt
from insightloop.core import events as ev
from insightloop.core.config import load_config

pytestmark = pytest.mark.real

OVERRIDES = ["search.strategy=sample", "search.rollouts=4", "search.answer_tokens=96", "loop.pairs=2",
             "loop.max_candidates=3", "loop.baseline_samples=1", "loop.analyst_tokens=96",
             "loop.admission_temperature=0.8", "loop.synthesize=true", "policy.threads=1",
             "loop.admission=source"]  # CORE's one-try test here; the paired test has its own real test below


def test_adapt_learns_an_admitted_insight_with_provenance(tmp_path: Path) -> None:
    from insightloop.memory.embed import make_embedder
    from insightloop.memory.store import MemoryStore

    cfg = load_config(overrides=OVERRIDES)
    seen: list[ev.Event] = []
    res = adapt("bbh/boolean_expressions", 3, 6, 24, cfg, run_dir=tmp_path, seed=0, on_event=seen.append)
    summary = res.summary()
    assert list(summary) == list(SUMMARY_KEYS) and json.loads(json.dumps(summary)) == summary
    assert 0.0 <= summary["baseline_accuracy"] <= 1.0 and len(summary["lift_ci"]) == 2
    assert res.rollouts <= 24 and res.train.episodes >= 1 and res.train.analyses >= 1
    assert res.insights_admitted >= 1, res.train
    admitted = [e for e in seen if isinstance(e, ev.InsightAdmitted)]
    with MemoryStore.open(tmp_path, make_embedder("embedded"), cfg.memory, readonly=True) as store:
        items = [store.get(e.insight_id) for e in admitted]
        for ins in items:  # every admitted item, rule or worked example, says where it came from
            assert ins.status == "active" and ins.model and ins.source_episodes and ins.source_tasks
            assert ins.source_tasks[0].startswith("bbh/boolean_expressions/")
            assert "admission_episode" in ins.meta and store.baseline(ins.source_tasks[0]) is not None
            if ins.kind != "example":  # a rule also names the contrast it was drawn from
                assert {"pair_kind", "divergence_step", "positive", "negative"} <= set(ins.meta)
        assert store.list_episodes()


def test_paired_admission_on_the_real_model_admits_a_worked_example_over_noise() -> None:
    """Teacher forcing through the embedded model: a worked example of the task's format raises the
    likelihood of other problems' answer lines far more than an unrelated sentence does."""
    import random

    from insightloop.agent.backends import make_lm
    from insightloop.agent.learn.admission import AdmissionTest, Candidate, answer_line
    from insightloop.core.budget import Budget
    from insightloop.core.prompt import Hint
    from insightloop.evals.suites import load_suite

    cfg = load_config(overrides=["policy.threads=1"])
    src, *rest = load_suite("bbh/boolean_expressions", limit=9, seed=0)
    example = Candidate(hint=Hint(kind="example", text=src.prompt, solution=answer_line(src)),
                        source_task=src.id, kind="example")
    noise = Candidate(hint=Hint(text="Bananas are yellow and grow in warm places."), source_task=src.id)
    budget = Budget().start()
    good, bad = AdmissionTest(make_lm(cfg.policy), cfg.loop, random.Random(0)).judge(
        [example, noise], [(t, answer_line(t)) for t in rest], budget)
    assert good.admitted and set(good.gains) == {t.id for t in rest}
    assert good.gain > 10 * max(bad.gain, 0.01), (good.reason, bad.reason)
    assert budget.prompt_tokens > 0
