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
             "loop.admission_temperature=0.8", "loop.synthesize=true", "policy.threads=1"]


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
        ins = store.get(admitted[0].insight_id)
        assert ins.status == "active" and ins.model and ins.source_episodes and ins.source_tasks
        assert ins.source_tasks[0].startswith("bbh/boolean_expressions/")
        assert {"pair_kind", "divergence_step", "positive", "negative", "admission_episode"} <= set(ins.meta)
        assert store.baseline(ins.source_tasks[0]) is not None
        assert store.list_episodes()
