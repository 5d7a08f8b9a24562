"""The paired admission test and worked-example memory items, on fakes (no model)."""

from __future__ import annotations

import random

from insightloop.agent.learn.admission import AdmissionTest, Candidate, bootstrap_lower
from insightloop.agent.learn.candidates import example_candidate
from insightloop.agent.learn.loop import hints_of
from insightloop.agent.search.domain import build_messages
from insightloop.core.budget import Budget
from insightloop.core.config import LoopConfig
from insightloop.core.episode import Episode, Trajectory
from insightloop.core.lm import ScoreRequest, Scores
from insightloop.core.prompt import Hint
from insightloop.core.task import Task
from insightloop.memory.records import Insight

TASKS = [Task(id=f"t{i}", family="arith", prompt=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(5)]


class FakeScorer:
    """A reference gains `lift` nats per token for each helpful line anywhere in the prompt."""

    name = "fake-scorer"

    def __init__(self, helpful: dict[str, float]) -> None:
        self.helpful = helpful
        self.requests: list[ScoreRequest] = []

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
        self.requests += reqs
        out = []
        for r in reqs:
            prompt = " ".join(m.content for m in r.messages)
            lift = sum(v for k, v in self.helpful.items() if k in prompt)
            toks = [max(1, len(c) // 4) for c in r.continuations]
            out.append(Scores(logprobs=[(-2.0 + lift) * t for t in toks], tokens=toks,
                              prompt_tokens=len(prompt) // 4))
        return out


def _problems() -> list[tuple[Task, str]]:
    return [(t, f"Step 1: {t.prompt}\n\nAnswer: {t.answer}") for t in TASKS]


def test_a_helpful_rule_is_admitted_and_a_useless_one_is_not() -> None:
    lm = FakeScorer({"carry the tens": 0.3, "harmful": -0.2})
    test = AdmissionTest(lm, LoopConfig(), random.Random(0))
    cands = [Candidate(hint=Hint(text=t), source_task="t0") for t in
             ("When adding, carry the tens.", "When adding, think about colours.", "A harmful rule.")]
    budget = Budget().start()
    good, useless, bad = test.judge(cands, _problems(), budget)
    assert good.admitted and good.gain > 0.29 and good.lower > 0 and len(good.gains) == 5
    assert not useless.admitted and abs(useless.gain) < 1e-9
    assert not bad.admitted and bad.gain < 0
    assert budget.prompt_tokens > 0 and budget.completion_tokens > 0  # scoring passes are charged
    n = len(lm.requests)
    test.judge(cands[:1], _problems(), budget)
    assert len(lm.requests) == n + 5  # the no-candidate scores are computed once and reused


def test_a_worked_example_is_never_scored_on_its_own_problem() -> None:
    lm = FakeScorer({"What is 0 + 0?": 0.5})
    test = AdmissionTest(lm, LoopConfig(), random.Random(0))
    example = Candidate(hint=Hint(kind="example", text="What is 0 + 0?", solution="Answer: 0"),
                        source_task="t0", kind="example")
    (verdict,) = test.judge([example], _problems(), Budget().start())
    assert set(verdict.gains) == {"t1", "t2", "t3", "t4"} and verdict.admitted
    with_example = [r for r in lm.requests if len(r.messages) > 2]
    assert with_example and all(r.messages[1].content == "What is 0 + 0?" for r in with_example)
    assert all(r.messages[2].role == "assistant" and r.messages[2].content == "Answer: 0" for r in with_example)


def test_the_bound_needs_consistent_gains() -> None:
    rng = random.Random(0)
    assert bootstrap_lower([0.2, 0.3, 0.25, 0.2], 0.9, rng) > 0
    assert bootstrap_lower([0.9, -0.3, -0.2, -0.3], 0.9, rng) < 0
    test = AdmissionTest(FakeScorer({}), LoopConfig(admission_min_gain=0.1), rng)
    assert not test.decide({"a": 0.05, "b": 0.06}).admitted  # consistent but below the least gain
    assert not test.decide({}).admitted


def test_examples_come_from_the_shortest_verified_attempt() -> None:
    task = TASKS[2]
    long = Trajectory(text="Step 1: 2 + 2 is four, as we count.\n\nAnswer: 4", reward=1.0)
    short = Trajectory(text="Step 1: 2 + 2 = 4\n\nAnswer: 4", reward=1.0)
    wrong = Trajectory(text="Answer: 5", reward=0.0)
    ep = Episode(id="e", task=task, trajectories=[long, wrong, short])
    cand = example_candidate(ep, 600)
    assert cand is not None and cand.hint.solution == short.text and cand.hint.text == task.prompt
    assert cand.kind == "example" and cand.source_task == task.id
    assert example_candidate(ep, 10) is None  # too long to show
    assert example_candidate(Episode(id="f", task=task, trajectories=[wrong]), 600) is None


def test_memory_items_become_rules_and_exchanges_in_the_prompt() -> None:
    items = [Insight(id="i1", text="When adding, carry the tens.", status="active"),
             Insight(id="i2", text="What is 1 + 1?", kind="example", solution="Step 1: 1 + 1 = 2\n\nAnswer: 2",
                     status="active")]
    msgs = build_messages(TASKS[3], hints_of(items))
    assert "carry the tens" in msgs[0].content and msgs[0].role == "system"
    assert [m.role for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1].content == "What is 1 + 1?" and msgs[2].content.endswith("Answer: 2")
    assert msgs[-1].content == TASKS[3].prompt


class ScoringPolicy:
    """Right on a task when its prompt shows a worked example (an earlier exchange), else one time in
    three when sampling; as a scorer, an example raises every reference's likelihood."""

    name = "scoring-policy"

    def generate(self, reqs: list) -> list:
        from insightloop.core.lm import Generation

        out = []
        for r in reqs:
            answer = r.messages[-1].content.split("=")[-1].strip()
            shown = len(r.messages) > 2
            row = []
            for i in range(r.n):
                lucky = r.temperature > 0 and (hash((r.seed, i, r.assistant_prefix)) % 3 == 0)
                text = " add.\n\nAnswer: " + (answer if shown or lucky else "0")
                row.append(Generation(text=text, prompt_tokens=50, completion_tokens=5))
            out.append(row)
        return out

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
        return [Scores(logprobs=[-1.0 if len(r.messages) > 2 else -3.0] * len(r.continuations),
                       tokens=[4] * len(r.continuations), prompt_tokens=50) for r in reqs]


def test_the_loop_learns_worked_examples_and_shows_them_at_evaluation(tmp_path) -> None:
    from insightloop.agent.learn.loop import Learner
    from insightloop.core.config import load_config
    from insightloop.memory.embed import HashingEmbedder
    from insightloop.memory.store import MemoryStore

    tasks = [Task(id=f"s{i}", family="arith", prompt=f"Add: {i} + {i + 10} = {2 * i + 10}",
                  answer=str(2 * i + 10), verifier="numeric") for i in range(8)]
    cfg = load_config(overrides=["search.strategy=sample", "search.rollouts=3", "memory.top_k=3",
                                 "loop.synthesize=false", "memory.prompt_token_budget=600"])
    policy = ScoringPolicy()
    with MemoryStore.open(tmp_path, HashingEmbedder(), cfg.memory) as store:
        learner = Learner(policy, policy, store, cfg, random.Random(0), run_dir=tmp_path)  # type: ignore[arg-type]
        assert learner.curator.admission is not None  # the policy can score: the paired test is used
        before = learner.evaluate(tasks[5:], use_memory=True, budget=Budget().start())
        report = learner.train(tasks[:5], Budget(max_rollouts=40))
        examples = [i for i in store.list_insights(status="active") if i.kind == "example"]
        assert report.insights_admitted >= 1 and examples
        ex = examples[0]
        assert ex.solution.endswith("Answer: " + next(t.answer for t in tasks if t.id == ex.source_tasks[0]))
        assert ex.meta["admission"]["gain"] > 0 and ex.meta["source"] == "attempt"
        after = learner.evaluate(tasks[5:], use_memory=True, budget=Budget().start())
    assert before.accuracy == 0.0 and after.accuracy == 1.0
