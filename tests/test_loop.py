"""The CORE loop on fakes: learning an insight, admission accounting, budget caps, frozen evaluation."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import pytest
from insightloop.agent.learn.curation import ADMIT_REASON, FAIL_REASON
from insightloop.agent.learn.loop import Learner
from insightloop.core import events as ev
from insightloop.core.budget import Budget
from insightloop.core.config import Config, load_config
from insightloop.core.episode import Episode
from insightloop.core.lm import Generation, GenRequest
from insightloop.core.task import Task
from insightloop.memory.records import Attempt, Insight

OLD = Attempt(task_id="old", task_text="Add", family="arith", text="Answer: 3", reward=1.0)
LESSON = "When adding numbers, carry the tens digit before writing the answer."


def _h(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16)


class FakePolicy:
    """Solves a task when the lesson is in its prompt; otherwise right only ~1 time in `odds`.

    Every whole attempt (a request without stop strings) is logged, so tests can count rollouts.
    """

    name = "fake-policy"

    def __init__(self, odds: int = 3):
        self.odds = odds
        self.attempts = 0

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        return [[self._one(r, i) for i in range(r.n)] for r in reqs]

    def _one(self, req: GenRequest, i: int) -> Generation:
        if not req.stop:
            self.attempts += 1
        system, user = req.messages[0].content, req.messages[-1].content
        answer = user.splitlines()[0].split("=")[-1].strip()
        knows = "carry the tens" in system
        lucky = _h(req.seed, i, req.assistant_prefix, user) % self.odds == 0
        right = knows or (req.temperature > 0 and lucky)
        body = " add.\n\nAnswer: " + (answer if right else "0")
        return Generation(text=body, prompt_tokens=len(system + user) // 4, completion_tokens=5)


class FakeAnalyst:
    """Fills the pre-filled analysis lines; the INSIGHT line gets `insight` (which starts with 'When')."""

    name = "fake-analyst"

    def __init__(self, insight: str = LESSON):
        self.insight = insight
        self.calls = 0

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        self.calls += len(reqs)
        return [[Generation(text=self._line(r), prompt_tokens=50, completion_tokens=20)] for r in reqs]

    def _line(self, req: GenRequest) -> str:
        if req.assistant_prefix.endswith("INSIGHT: When"):
            return self.insight.removeprefix("When")
        return " lost the carry"


class FakeStore:
    """An in-memory stand-in for MemoryStore with the same method names; every write bumps version."""

    def __init__(self) -> None:
        self.version = 0
        self.insights: dict[str, Insight] = {}
        self.attempts: list[Attempt] = []
        self.episodes: list[Episode] = []
        self.baselines: dict[str, float] = {}
        self.credits: list[tuple[list[str], str, float, float]] = []
        self.admissions: list[tuple[str, bool, str]] = []

    def _bump(self) -> None:
        self.version += 1

    def retrieve(self, task: Task, k: int, train: bool, token_budget: int | None) -> list[Insight]:
        return [i for i in self.insights.values() if i.status == "active"][:k]

    def credit(self, insight_ids: list[str], task: Task, reward: float, baseline: float,
               episode_id: str) -> list[str]:
        self.credits.append((insight_ids, task.id, reward, baseline))
        self._bump()
        return [i for i in insight_ids if i in self.insights]

    def add_insight(self, text: str, kind: str, applies_when: str, family: str | None,
                    source_episode: str | None, source_task: str | None, model: str,
                    meta: dict[str, Any], *, solution: str = "") -> tuple[Insight, bool]:
        for ins in self.insights.values():
            if ins.text == text:
                return ins, False
        ins = Insight(id=f"i{len(self.insights)}", text=text, kind=kind, applies_when=applies_when,  # type: ignore[arg-type]
                      family=family, source_episodes=[source_episode or ""], source_tasks=[source_task or ""],
                      model=model, meta=meta)
        self.insights[ins.id] = ins
        self._bump()
        return ins, True

    def record_admission(self, insight_id: str, admitted: bool, reason: str) -> Insight:
        self.insights[insight_id].status = "active" if admitted else "retired"
        self.admissions.append((insight_id, admitted, reason))
        self._bump()
        return self.insights[insight_id]

    def retire_if_harmful(self) -> list[Insight]:
        return []

    def add_attempt(self, attempt: Attempt) -> Attempt:
        self.attempts.append(attempt)
        self._bump()
        return attempt

    def similar_attempts(self, text: str, k: int, family: str | None) -> list[tuple[Attempt, float]]:
        return [(a, 1.0) for a in self.attempts if a.family == family][:k]

    def add_episode(self, ep: Episode) -> Episode:
        self.episodes.append(ep)
        return ep

    def set_baseline(self, task_id: str, rate: float, n: int) -> None:
        self.baselines[task_id] = rate
        self._bump()

    def baseline(self, task_id: str) -> float | None:
        return self.baselines.get(task_id)


def _tasks(n: int, start: int = 0) -> list[Task]:
    return [Task(id=f"t{i}", family="arith", prompt=f"Add: {i} + {i + 10} = {2 * i + 10}",
                 answer=str(2 * i + 10), verifier="numeric") for i in range(start, start + n)]


def _cfg(**loop: Any) -> Config:
    cfg = load_config(overrides=["search.strategy=sample", "search.rollouts=3", "loop.pairs=2",
                                 "memory.top_k=3"])
    return cfg.model_copy(update={"loop": cfg.loop.model_copy(update=loop)})


def _learner(cfg: Config, store: FakeStore, policy: FakePolicy | None = None,
             analyst: FakeAnalyst | None = None, events: list[ev.Event] | None = None) -> Learner:
    sink = events.append if events is not None else ev.ignore
    return Learner(policy or FakePolicy(), analyst or FakeAnalyst(), store, cfg, random.Random(0), sink)


def test_learns_an_admitted_insight_with_provenance() -> None:
    store, events = FakeStore(), []
    learner = _learner(_cfg(), store, events=events)
    report = learner.train(_tasks(3), Budget(max_rollouts=30))
    assert report.insights_admitted >= 1
    ins = next(iter(store.insights.values()))
    assert ins.text == LESSON and ins.status == "active" and ins.model == "fake-analyst"
    assert ins.source_tasks[0].startswith("t") and ins.source_episodes[0]
    assert {"pair_kind", "divergence_step", "positive", "negative", "admission_episode"} <= set(ins.meta)
    assert (ins.id, True, ADMIT_REASON) in store.admissions
    kinds = {e.kind for e in events}
    assert {"episode_started", "episode_finished", "insight_proposed", "insight_admitted", "budget"} <= kinds
    assert any(isinstance(e, ev.Credited) and e.insight_ids == [ins.id] for e in events)
    assert store.episodes and all(ep.meta["phase"] in ("baseline", "train") for ep in store.episodes)


@pytest.mark.parametrize("cap", [0, 1, 2, 4, 7, 11, 19, 26])
def test_budget_is_never_exceeded_and_spent_exactly(cap: int) -> None:
    policy = FakePolicy()
    budget = Budget(max_rollouts=cap)
    _learner(_cfg(), FakeStore(), policy).train(_tasks(4), budget)
    assert budget.rollouts == cap  # every rollout is paid for, and the loop stops exactly at the cap
    assert policy.attempts == budget.rollouts  # every verified attempt was counted


def test_admission_tries_are_counted_rollouts() -> None:
    cfg = _cfg(baseline_samples=0, max_candidates=1, synthesize=False)
    policy, store = FakePolicy(odds=10**9), FakeStore()  # never lucky: every episode fails
    store.attempts.append(Attempt(task_id="old", task_text="Add: 1 + 2", family="arith", text="Answer: 3",
                                  reward=1.0))
    learner = _learner(cfg, store, policy)
    budget = Budget(max_rollouts=4)  # one episode (3 rollouts) + one admission try
    report = learner.train(_tasks(1), budget)
    assert budget.rollouts == 4 and policy.attempts == 4
    assert report.insights_admitted == 1 and report.episodes == 1
    assert store.insights["i0"].meta["pair_kind"] == "memory"  # no correct attempt: memory pair
    assert store.insights["i0"].meta["positive_task"] == "old"


def test_candidates_that_fail_the_admission_try_are_rejected() -> None:
    cfg = _cfg(baseline_samples=0, max_candidates=1, synthesize=False)
    analyst = FakeAnalyst("When adding numbers, write slowly and neatly.")
    events: list[ev.Event] = []
    store = FakeStore()
    store.attempts.append(OLD)
    learner = _learner(cfg, store, FakePolicy(odds=10**9), analyst, events)
    report = learner.train(_tasks(1), Budget(max_rollouts=4))
    assert report.insights_admitted == 0 and report.insights_rejected == 1
    assert not store.insights
    assert [e.reason for e in events if isinstance(e, ev.InsightRejected)] == [FAIL_REASON]


def test_leaking_insights_are_rejected_before_any_try() -> None:
    analyst = FakeAnalyst("When adding these, the result is 10.")
    events: list[ev.Event] = []
    cfg = _cfg(baseline_samples=0, synthesize=False)
    store = FakeStore()
    store.attempts.append(OLD)
    policy = FakePolicy(odds=10**9)
    report = _learner(cfg, store, policy, analyst, events).train(_tasks(1), Budget(max_rollouts=4))
    reasons = [e.reason for e in events if isinstance(e, ev.InsightRejected)]
    assert report.insights_rejected == len(reasons) >= 1 and not store.insights
    assert all("answer" in r for r in reasons)  # rejected before any admission try


def test_evaluation_freezes_memory_and_uses_it() -> None:
    store = FakeStore()
    learner = _learner(_cfg(), store)
    learner.train(_tasks(3), Budget(max_rollouts=30))
    assert store.insights
    version, credits, episodes = store.version, len(store.credits), len(store.episodes)
    test = _tasks(4, start=20)
    base = learner.evaluate(test, use_memory=False, budget=Budget())
    adapted = learner.evaluate(test, use_memory=True, budget=Budget())
    assert store.version == version and len(store.credits) == credits and len(store.episodes) == episodes
    assert base.accuracy == 0.0 and adapted.accuracy == 1.0  # greedy: only the lesson helps
    assert all(item.insight_ids for item in adapted.items) and not any(i.insight_ids for i in base.items)
    assert adapted.prompt_tokens_per_problem > base.prompt_tokens_per_problem


def test_synthesized_chains_are_verified_and_stored_for_the_fold(tmp_path: Any) -> None:
    from insightloop.memory.chains import load_chains

    store = FakeStore()
    learner = Learner(FakePolicy(), FakeAnalyst(), store, _cfg(), random.Random(0), run_dir=tmp_path)
    report = learner.train(_tasks(2), Budget(max_rollouts=20))
    chains = load_chains(tmp_path)
    assert report.chains_tried >= 1 and report.chains_verified == len(chains) >= 1
    assert all(c.verified and c.text.startswith("Step 1:") for c in chains)
    assert store.episodes  # episodes are logged in the store, where the fold reads them too


def test_fold_runs_every_n_training_episodes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import insightloop.apps.runtime as runtime
    from insightloop.memory.embed import HashingEmbedder

    calls: list[Any] = []

    def fake_fold(run_dir: Any, cfg: Config, **kw: Any) -> Any:
        calls.append((run_dir, kw["lm"]))
        return SimpleNamespace(accepted=True, checkpoint="ckpt/1", index=1, method="grpo")

    monkeypatch.setattr(runtime, "fold", fake_fold)
    events: list[ev.Event] = []
    policy = FakePolicy()
    cfg = _cfg(baseline_samples=0, fold_every=2, synthesize=False)
    rt = runtime.Runtime(cfg, tmp_path, policy=policy, analyst=FakeAnalyst(), embedder=HashingEmbedder())
    learner = rt.learner(FakeStore(), run_dir=tmp_path, rng=random.Random(0),  # type: ignore[arg-type]
                         on_event=events.append)
    report = learner.train(_tasks(2), Budget(max_rollouts=15))
    assert report.folds == len(calls) == report.episodes // 2 >= 1
    assert all(lm is policy for _, lm in calls)
    finished = [e for e in events if isinstance(e, ev.FoldFinished)]
    assert len(finished) == len(calls) and finished[0].ok and finished[0].detail["checkpoint"] == "ckpt/1"


def test_with_the_real_store_learning_persists_and_evaluation_writes_nothing(tmp_path: Any) -> None:
    from insightloop.memory.embed import HashingEmbedder
    from insightloop.memory.store import MemoryStore

    cfg = _cfg()
    with MemoryStore.open(tmp_path, HashingEmbedder(), cfg.memory) as store:
        learner = Learner(FakePolicy(), FakeAnalyst(), store, cfg, random.Random(0), run_dir=tmp_path)
        report = learner.train(_tasks(3), Budget(max_rollouts=30))
        assert report.insights_admitted >= 1
        version = store.version
        adapted = learner.evaluate(_tasks(4, start=20), use_memory=True, budget=Budget())
        assert store.version == version and adapted.accuracy == 1.0
    with MemoryStore.open(tmp_path, HashingEmbedder(), cfg.memory, readonly=True) as store:
        (ins,) = store.list_insights(status="active")
        assert ins.text == LESSON and ins.source_tasks and ins.meta["pair_kind"] in ("hard", "memory")
        assert ins.uses >= 0 and store.baseline("t0") is not None


def test_adapt_measures_the_lift_on_a_jsonl_suite(tmp_path: Any) -> None:
    import json

    from insightloop.apps.adapt import SUMMARY_KEYS, adapt
    from insightloop.apps.runtime import Runtime
    from insightloop.core.stats import paired_ci
    from insightloop.memory.embed import HashingEmbedder

    path = tmp_path / "sums.jsonl"
    rows = [{"id": t.id, "prompt": t.prompt, "answer": t.answer, "verifier": "numeric", "family": "arith"}
            for t in _tasks(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    res = adapt(f"jsonl:{path}", 4, 6, 20, _cfg(), run_dir=tmp_path / "run", seed=1,
                runtime=Runtime(_cfg(), policy=FakePolicy(), analyst=FakeAnalyst(), embedder=HashingEmbedder()))
    summary = res.summary()
    assert list(summary) == list(SUMMARY_KEYS)
    assert summary["baseline_accuracy"] == 0.0 and summary["adapted_accuracy"] == 1.0
    assert summary["lift"] == 1.0 and summary["lift_ci"] == [1.0, 1.0]
    assert summary["rollouts"] == 20 and summary["insights_admitted"] >= 1
    assert res.n_train == 4 and res.n_test == 6 and res.insights == [LESSON]
    lo, hi = paired_ci([0, 0, 1, 1], [1, 0, 1, 1], random.Random(0))
    assert lo == 0.0 and hi == 0.75  # one of four items gained: P(mean >= 0.75) ~ 5% under resampling


def test_respond_answers_greedily_with_the_memory_then_learns() -> None:
    store, events = FakeStore(), []
    policy = FakePolicy()
    learner = _learner(_cfg(), store, policy=policy, events=events)
    task = _tasks(1)[0]
    answer = learner.respond(task, Budget(max_rollouts=20))
    assert answer.meta["phase"] == "answer" and answer.strategy == "sample" and answer.rollouts == 1
    assert not answer.correct  # greedy, no lesson yet: the fake answers 0; the reference is not used to pick
    phases = [e.meta["phase"] for e in store.episodes]
    assert phases[0] == "answer" and "train" in phases  # then a training episode on the labeled task
    assert store.insights  # ... which taught it the lesson
    again = learner.respond(task, Budget(max_rollouts=20), learn=False)
    assert again.correct and [e.meta["phase"] for e in store.episodes].count("train") == phases.count("train")


def test_respond_keeps_the_streams_labeled_tasks_as_admission_problems() -> None:
    """Without `train()` (the daemon answers then learns one task at a time) the admission test still
    has problems to score candidates on: the stream's latest labeled tasks, newest first."""
    learner = _learner(_cfg(admission_problems=2), FakeStore())
    tasks = _tasks(4)
    for task in tasks:
        learner.respond(task, Budget(max_rollouts=20))
    assert [t.id for t in learner.curator.train_tasks] == [tasks[3].id, tasks[2].id, tasks[1].id]
    learner.respond(tasks[1], Budget(max_rollouts=20))
    assert [t.id for t in learner.curator.train_tasks] == [tasks[1].id, tasks[3].id, tasks[2].id]
    learner.respond(Task(id="unlabeled", family="arith", prompt="2+2?"), Budget(max_rollouts=20))
    assert "unlabeled" not in [t.id for t in learner.curator.train_tasks]


def test_curate_off_keeps_verified_attempts_and_adds_no_memory_items() -> None:
    """With `loop.curate=false` a training episode keeps its correct attempts (fold data) and asks the
    analyst nothing; the memory gains no item."""
    store = FakeStore()
    analyst = FakeAnalyst()
    learner = _learner(_cfg(curate=False), store, analyst=analyst)
    learner.train(_tasks(3), Budget(max_rollouts=30))
    assert store.attempts and not store.insights and analyst.calls == 0
