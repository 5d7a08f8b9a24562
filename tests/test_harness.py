"""The benchmark harness on a fake LM: identical splits, enforced budgets, the results schema."""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
from insightloop.core.budget import Budget
from insightloop.core.config import Config, load_config
from insightloop.core.lm import Generation, GenRequest
from insightloop.core.stats import mean_ci
from insightloop.evals.harness import baselines, ours
from insightloop.evals.harness.aggregate import aggregate, lifts, top_answer
from insightloop.evals.harness.context import Context
from insightloop.evals.harness.measure import evaluate
from insightloop.evals.harness.methods import ALL_METHODS, methods_table
from insightloop.evals.harness.records import EvalSpec, MethodResult, RunRecord, RunSpec
from insightloop.evals.harness.report import load_results, markdown, write_report
from insightloop.evals.harness.runner import BudgetExceeded, make_runs, run_eval
from insightloop.memory.embed import HashingEmbedder
from insightloop.rl.sources import held_out, split_validation

LESSON = "When adding numbers, carry the tens digit before writing the answer."
LEARNING = ["best-of-n", "episodic-rag", "reflect-success", "core"]


def _h(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16)


class FakeLM:
    """Policy, analyst and reflector in one. The policy is right when its prompt holds the lesson,
    a worked example or a past attempt; otherwise about one time in three when sampling."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        self.calls += 1
        return [[self._one(r, i) for i in range(r.n)] for r in reqs]

    def _one(self, req: GenRequest, i: int) -> Generation:
        system, user = req.messages[0].content, req.messages[-1].content
        if "compare two attempts" in system:  # the analyst fills one pre-filled line at a time
            head = req.assistant_prefix.endswith("When")
            lesson = LESSON.removeprefix("When") if head else " lost the carry"
            return Generation(text=lesson, prompt_tokens=40, completion_tokens=10)
        if "correct solution" in user:
            return Generation(
                text=" adding numbers, carry the tens digit first.", prompt_tokens=30, completion_tokens=10
            )
        answer = user.split("=")[-1].strip()
        demos = len(req.messages) > 2  # worked examples come as earlier exchanges
        helped = demos or any(k in system for k in ("carry the tens", "Past attempt"))
        lucky = req.temperature > 0 and _h(req.seed, i, req.assistant_prefix, user) % 3 == 0
        body = " add.\n\nAnswer: " + (answer if helped or lucky else "0")
        prompt = sum(len(m.content) for m in req.messages)
        return Generation(text=body, prompt_tokens=prompt // 4, completion_tokens=5)


def _suite(tmp_path: Path, n: int = 14) -> str:
    path = tmp_path / "sums.jsonl"
    lines = [
        json.dumps(
            {
                "id": f"s{i}",
                "prompt": f"Add {i} and {i + 7}. {i} + {i + 7} = {2 * i + 7}",
                "answer": str(2 * i + 7),
                "verifier": "numeric",
                "family": "arith",
            }
        )
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return f"jsonl:{path}"


def _cfg() -> Config:
    return load_config(
        None,
        [
            "search.strategy=sample",
            "search.rollouts=3",
            "loop.baseline_samples=1",
            "loop.pairs=2",
            "loop.max_candidates=1",
            "memory.top_k=3",
        ],
    )


def _ctx(tmp_path: Path) -> Context:
    return Context(_cfg(), policy=FakeLM(), embedder=HashingEmbedder(64), workdir=tmp_path / "work")


def _run(tmp_path: Path, methods: list[str], seeds: list[int], budget: int = 9) -> tuple[EvalSpec, object]:
    spec = EvalSpec(
        suites=[_suite(tmp_path)], methods=methods, n_train=4, n_test=5, budget=budget, seeds=seeds
    )
    ctx = _ctx(tmp_path)
    try:
        return spec, run_eval(spec, ctx, keep_going=False)
    finally:
        ctx.close()


def test_every_method_sees_the_same_split_and_stays_within_the_budget(tmp_path: Path) -> None:
    spec, res = _run(tmp_path, ["none", *LEARNING], seeds=[0, 1])
    recs = res.records  # type: ignore[attr-defined]
    assert len(recs) == 2 * 5
    for seed in (0, 1):
        cell = [r for r in recs if r.seed == seed]
        assert len({tuple(r.train_ids) for r in cell}) == 1
        assert len({tuple(r.test_ids) for r in cell}) == 1
        assert not set(cell[0].train_ids) & set(cell[0].test_ids)
    assert {tuple(r.test_ids) for r in recs if r.seed == 0} != {
        tuple(r.test_ids) for r in recs if r.seed == 1
    }
    for r in recs:
        assert r.error is None
        assert 0 <= r.rollouts <= spec.budget
        assert len(r.scores) == spec.n_test
        assert (r.rollouts == 0) == (r.method == "none")
    # Rejection sampling spends the same ⌈9 / 4⌉ × 4 → capped-at-9 rollouts for the three sampling methods.
    spent = {r.method: r.rollouts for r in recs if r.seed == 0}
    assert spent["best-of-n"] == spent["episodic-rag"] == spent["reflect-success"] == spec.budget


def test_learning_methods_beat_the_unlearned_fake(tmp_path: Path) -> None:
    _, res = _run(tmp_path, ["none", *LEARNING], seeds=[0])
    acc = {r.method: r.accuracy for r in res.records}  # type: ignore[attr-defined]
    assert acc["none"] == 0.0  # greedy without help: always wrong
    assert acc["best-of-n"] == 1.0 and acc["episodic-rag"] == 1.0
    assert acc["reflect-success"] == 1.0  # its insight names the carry
    core = next(r for r in res.records if r.method == "core")  # type: ignore[attr-defined]
    assert core.accuracy == 1.0 and core.detail["insights_admitted"] >= 1


def test_a_budget_overrun_is_refused(tmp_path: Path) -> None:
    def greedy(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
        budget.charge([], rollouts=run.budget + 1)
        return MethodResult(report=evaluate(ctx, run))

    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["greedy"], n_train=4, n_test=3, budget=5, seeds=[0])
    ctx = _ctx(tmp_path)
    with pytest.raises(BudgetExceeded, match="over the budget of 5"):
        run_eval(spec, ctx, methods={"greedy": greedy})
    ctx.close()


def test_a_failing_method_is_recorded_and_the_run_goes_on(tmp_path: Path) -> None:
    def broken(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
        raise RuntimeError("no weights")

    spec = EvalSpec(
        suites=[_suite(tmp_path)], methods=["broken", "none"], n_train=4, n_test=3, budget=5, seeds=[0, 1]
    )
    ctx = _ctx(tmp_path)
    res = run_eval(spec, ctx, methods={"broken": broken, "none": baselines.run_none})
    ctx.close()
    bad = [r for r in res.records if r.method == "broken"]
    assert [r.error for r in bad] == ["RuntimeError: no weights"] * 2
    agg = {a.method: a for a in res.aggregates}
    assert agg["broken"].failed == 2 and agg["broken"].seeds == 0
    assert agg["none"].seeds == 2


def test_results_json_markdown_and_plots(tmp_path: Path) -> None:
    spec, res = _run(tmp_path, ["none", "best-of-n"], seeds=[0, 1, 2])
    paths = write_report(res, tmp_path / "out")  # type: ignore[arg-type]
    back = load_results(tmp_path / "out")
    assert back.spec == spec
    assert back.config["search"]["strategy"] == "sample"  # the config is recorded for reproduction
    assert {"python", "cpus", "torch"} <= set(back.machine)
    assert [a.method for a in back.aggregates] == ["none", "best-of-n"]
    assert all(a.seeds == 3 for a in back.aggregates)
    raw = json.loads(paths["json"].read_text())
    assert {"spec", "config", "machine", "records", "aggregates", "wall_seconds"} <= set(raw)
    assert {
        "suite",
        "method",
        "seed",
        "accuracy",
        "scores",
        "rollouts",
        "prompt_tokens_per_problem",
        "train_ids",
        "test_ids",
        "seconds",
    } <= set(raw["records"][0])
    md = paths["md"].read_text()
    assert "| best-of-n |" in md and "rollouts used" in md and "prompt tokens / test problem" in md
    # Every record keeps the chosen answer of each test problem, and the table its most frequent one.
    assert all(len(r.answers) == len(r.scores) for r in back.records)
    assert "most frequent answer" in md and all(a.top_share > 0 for a in back.aggregates)
    for key in ("curves", "tokens"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Demonstrations cost prompt tokens: the table shows it.
    agg = {a.method: a for a in back.aggregates}
    assert agg["best-of-n"].prompt_tokens_per_problem > agg["none"].prompt_tokens_per_problem


def test_resume_keeps_finished_runs(tmp_path: Path) -> None:
    spec, first = _run(tmp_path, ["none"], seeds=[0])
    calls: list[int] = []

    def counting(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
        calls.append(run.seed)
        return baselines.run_none(ctx, run, budget)

    spec2 = spec.model_copy(update={"seeds": [0, 1]})
    ctx = _ctx(tmp_path)
    res = run_eval(spec2, ctx, methods={"none": counting}, previous=first)  # type: ignore[arg-type]
    ctx.close()
    assert calls == [1] and len(res.records) == 2


def test_splits_repeat_for_the_same_seed(tmp_path: Path) -> None:
    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["none"], n_train=4, n_test=5, budget=3, seeds=[3])
    a, b = make_runs(spec, _cfg()), make_runs(spec, _cfg())
    assert [t.id for t in a[0].train] == [t.id for t in b[0].train]
    assert [t.id for t in a[0].test] == [t.id for t in b[0].test]
    assert a[0].cfg.seed == 3 and a[0].cfg.search.seed == 3


def test_fold_and_grpo_plans_fit_the_budget(tmp_path: Path) -> None:
    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["none"], n_train=5, n_test=3, budget=30, seeds=[0])
    cfg = _cfg()
    grpo = cfg.fold.grpo.model_copy(update={"group_size": 4})
    cfg.fold = cfg.fold.model_copy(update={"batch_size": 2, "grpo": grpo})
    run = make_runs(spec, cfg)[0]
    gate_slice = ours.fold_config(run).fold.gate_slice
    assert gate_slice == 1  # a third of five problems, at least one
    held = len(held_out(run.train, gate_slice, run.cfg.seed))
    assert held == 1
    # whichever training problems get an episode, the gate never holds out more than that
    for k in range(1, len(run.train) + 1):
        for some in itertools.combinations(run.train, k):
            eps = [SimpleNamespace(task=t) for t in some]
            assert len(split_validation(eps, gate_slice, run.cfg.seed)[1]) <= held  # type: ignore[arg-type]
    steps, reserved = ours.fold_plan(run, 30)
    assert steps == 1 and reserved == 4 * 2 + 2  # one step of two groups, and the gate's 2 × 1 held-out task
    per_step, grpo_steps = baselines.grpo_plan(run, Budget(max_rollouts=30))
    assert per_step == 2 and grpo_steps * 4 * per_step <= 30 and (grpo_steps + 1) * 4 * per_step > 30
    # SFT and DPO folds sample nothing: the configured steps, and only the gate's attempts reserved.
    for method in ("sft", "dpo"):
        run.cfg.fold = cfg.fold.model_copy(update={"method": method, "steps": 24})
        assert ours.fold_plan(run, 30) == (24, 2)


def test_grpo_baseline_trains_lora_on_a_cpu_like_a_fold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The `grpo` method decides LoRA and the learning rate as a fold does (`rl.policy.resolved`)."""
    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["none"], n_train=5, n_test=3, budget=30, seeds=[0])
    run = make_runs(spec, _cfg())[0]
    seen = {}

    class Stop(Exception):
        pass

    def trainer(model, tok, prompts, fc, steps, work, verify, seed):  # noqa: ANN001
        seen.update(fc=fc, steps=steps, prompts=len(prompts))
        raise Stop

    monkeypatch.setattr(baselines, "load_policy", lambda path: (None, None))
    monkeypatch.setattr(baselines, "chat_render", lambda tok: lambda task, insights: task.prompt)
    monkeypatch.setattr(baselines, "make_grpo_trainer", trainer)
    monkeypatch.setattr("insightloop.rl.policy.cuda_available", lambda: False)
    with pytest.raises(Stop):
        baselines.train_grpo(run, Budget(max_rollouts=32), tmp_path / "grpo")
    fc = seen["fc"]
    assert fc.lora is True and fc.lr == pytest.approx(1e-4) and fc.grpo.mix_offpolicy is False
    assert seen["prompts"] == 5 and seen["steps"] == 32 // (fc.grpo.group_size * fc.batch_size)


def test_mean_ci_and_aggregate_math() -> None:
    m, h = mean_ci([0.2, 0.4, 0.6])
    assert m == pytest.approx(0.4) and h == pytest.approx(4.303 * 0.2 / math.sqrt(3), rel=1e-3)
    assert mean_ci([0.5]) == (0.5, 0.0)
    assert aggregate([]) == []


def test_markdown_names_failures(tmp_path: Path) -> None:
    def broken(ctx: Context, run: RunSpec, budget: Budget) -> MethodResult:
        raise ValueError("bad")

    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["broken"], n_train=4, n_test=3, budget=5, seeds=[0])
    ctx = _ctx(tmp_path)
    res = run_eval(spec, ctx, methods={"broken": broken})
    ctx.close()
    assert "Failed runs" in markdown(res) and "ValueError: bad" in markdown(res)


def test_gepa_is_scored_by_our_verifier_not_by_substring() -> None:
    from gepa.adapters.default_adapter.default_adapter import ContainsAnswerEvaluator
    from insightloop.core.task import Task
    from insightloop.evals.harness.gepa_peer import BudgetStopper, VerifierEvaluator, data_of

    task = Task(
        id="b1", family="bool", prompt="not ( True ) and ( True ) is", answer="False", verifier="boolean"
    )
    ours_ = VerifierEvaluator([task])
    wrong = "False is tempting, but not False is True.\nAnswer: True"
    assert ContainsAnswerEvaluator()(data_of(task), wrong).score == 1.0  # GEPA's default is fooled
    assert ours_(data_of(task), wrong).score == 0.0
    assert "correct answer is 'False'" in ours_(data_of(task), wrong).feedback
    assert ours_(data_of(task), "Step 1: not True is False.\nAnswer: False").score == 1.0
    assert ours_.calls == 3 and ours_.correct == 1

    class State:
        total_num_evals = 5

    assert BudgetStopper(16, 11)(State()) is False  # 5 + 11 fits in 16
    assert BudgetStopper(15, 11)(State()) is True


def test_results_of_two_processes_merge(tmp_path: Path) -> None:
    from insightloop.evals.harness.report import merge

    _, a = _run(tmp_path, ["none"], seeds=[0])
    _, b = _run(tmp_path, ["none"], seeds=[1])
    both = merge([a, b])  # type: ignore[list-item]
    assert both.spec.seeds == [0, 1] and len(both.records) == 2
    assert [(x.method, x.seeds) for x in both.aggregates] == [("none", 2)]
    _, c = _run(tmp_path, ["none"], seeds=[0], budget=3)
    with pytest.raises(ValueError, match="different settings"):
        merge([a, c])  # type: ignore[list-item]


def test_every_method_name_has_a_function() -> None:
    table = methods_table()
    assert tuple(table) == ALL_METHODS and all(callable(f) for f in table.values())


def _record(method: str, scores: list[float], seed: int = 0) -> RunRecord:
    return RunRecord(suite="s", method=method, seed=seed, budget=10, accuracy=sum(scores) / len(scores),
                     scores=scores, rollouts=0, learn_prompt_tokens=0, learn_completion_tokens=0,
                     prompt_tokens_per_problem=0.0, train_ids=[], test_ids=[f"t{i}" for i in range(len(scores))],
                     learn_seconds=0.0, eval_seconds=0.0, seconds=0.0)


def test_lifts_pair_each_method_with_none_and_the_fold_with_core() -> None:
    none = [0.0] * 10 + [1.0] * 10
    core = [1.0] * 5 + [0.0] * 5 + [1.0] * 10  # +5 of 20 over none
    fold = [1.0] * 10 + [1.0] * 10  # +5 of 20 over core, +10 over none
    got = {(x.method, x.baseline): x for x in lifts([_record("none", none), _record("core", core),
                                                     _record("core+fold", fold)])}
    assert set(got) == {("core", "none"), ("core+fold", "none"), ("core+fold", "core")}
    assert got[("core+fold", "core")].lift == pytest.approx(0.25)
    assert got[("core+fold", "none")].lift == pytest.approx(0.5)
    assert got[("core+fold", "core")].n == 20
    # without `none` the fold is still measured against core; a different test split pairs nothing
    only = lifts([_record("core", core), _record("core+fold", fold), _record("grpo", none)])
    assert [(x.method, x.baseline) for x in only] == [("core+fold", "core")]
    other = _record("core+fold", fold, seed=0).model_copy(update={"test_ids": ["x"] * 20})
    assert lifts([_record("core", core), other]) == []


def test_majority_gives_the_most_frequent_training_answer_to_every_test_problem(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    answers = ["yes", "no", "yes", "yes", "no", "no", "yes", "no", "no"]
    path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "answer": a,
                                        "verifier": "boolean", "family": "yn"}) + "\n"
                            for i, a in enumerate(answers)))
    spec = EvalSpec(suites=[f"jsonl:{path}"], methods=["majority"], n_train=3, n_test=6, budget=5, seeds=[0])
    ctx = _ctx(tmp_path)
    res = run_eval(spec, ctx, keep_going=False)
    ctx.close()
    rec = res.records[0]  # type: ignore[attr-defined]
    assert rec.error is None and rec.rollouts == 0
    train = {json.loads(line)["id"]: json.loads(line)["answer"] for line in path.read_text().splitlines()}
    labels = [train[i] for i in rec.train_ids]
    top = max(dict.fromkeys(labels), key=labels.count)
    assert rec.detail["answer"] == top
    assert rec.scores == [1.0 if train[i] == top else 0.0 for i in rec.test_ids]
    assert rec.answers == [top] * 6
    agg = res.aggregates[0]  # type: ignore[attr-defined]
    assert (agg.top_answer, agg.top_share) == (top, 1.0)
    assert f'"{top}" 100 %' in markdown(res)  # type: ignore[arg-type]
    assert baselines.majority_answer([]) is None


def test_the_most_frequent_answer_and_its_share() -> None:
    assert top_answer(["son", "father", None, "son"]) == {"top_answer": "son", "top_share": 0.5}
    assert top_answer([None, None, "x"]) == {"top_answer": "", "top_share": 2 / 3}  # no answer, counted
    assert top_answer([]) == {}  # records written before answers were kept: the table shows "-"


def test_core_fold_learns_every_training_label_even_without_an_episode(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def fake_fold(where, cfg, lm=None, data=None):  # noqa: ANN001, ANN202 - records what would be folded
        seen["data"], seen["steps"] = data, cfg.fold.steps
        gate = SimpleNamespace(n=len(data.validation), old_accuracy=0.0, new_accuracy=0.0)
        return SimpleNamespace(accepted=False, metrics={}, gate=gate)

    monkeypatch.setattr(ours, "fold", fake_fold)
    monkeypatch.setattr(ours, "restore_base", lambda ctx, run: None)
    spec = EvalSpec(suites=[_suite(tmp_path)], methods=["core+fold"], n_train=6, n_test=2, budget=4, seeds=[0])
    ctx = _ctx(tmp_path)
    cfg = _cfg().model_copy(update={"fold": _cfg().fold.model_copy(
        update={"method": "sft", "steps": 3, "reference_answers": True})})
    run = make_runs(spec, cfg)[0]
    res = ours.run_core_fold(ctx, run, Budget(max_rollouts=spec.budget).start(ctx.clock))
    ctx.close()
    data = seen["data"]
    episodes = {ep.task.id for ep in data.episodes} | {t.id for t in data.validation}
    assert len(episodes) < len(run.train)  # the budget ran out before every problem had an episode
    refs = {x.task.id for x in data.examples if x.insight_id.startswith("reference:")}
    assert refs == {t.id for t in run.train} - {t.id for t in data.validation}
    assert 1 <= len(data.validation) <= len(run.train) // 3  # the gate holds out a third at most
    assert seen["steps"] == 3 and res.detail["fold_method"] == "sft" and res.detail["fold"] == "rejected"
