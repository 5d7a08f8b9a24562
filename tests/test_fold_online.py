"""Folding from what the loop verified, on fakes: worked examples as fold data, held-out problems kept
out of training, the gate's decision rules, LoRA by default on a CPU, the admission reset after an
accepted fold, and each fold's result in status.json, `insightloop status` and the console."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from insightloop.core.config import Config, load_config
from insightloop.core.episode import Chain, Episode, Trajectory
from insightloop.core.task import Reward, Task
from insightloop.rl import checkpoints as ck
from insightloop.rl.data import WorkedExample, build_dpo_pairs, build_grpo_prompts, build_sft_examples
from insightloop.rl.policy import FULL_LR, LORA_LR, resolved
from insightloop.rl.sources import FoldData, load_fold_data, without_held_out, worked_examples
from insightloop.rl.verdict import decide


def render(task: Task, insights=()) -> str:
    return f"<user>{task.prompt}</user>"


def task(i: int, answer: str = "7") -> Task:
    return Task(id=f"t{i}", family="toy", prompt=f"problem {i}", answer=answer, verifier="exact")


def episode(t: Task, started: float, good: list[str], bad: list[str]) -> Episode:
    trajs = [Trajectory(text=g, reward=1.0) for g in good] + [Trajectory(text=b, reward=0.0) for b in bad]
    return Episode(id=f"e-{t.id}-{started}", task=t, trajectories=trajs, started=started,
                   reward=Reward(score=1.0 if good else 0.0))


# ------------------------------------------------------------------------------------- fold data


def test_worked_examples_join_sft_and_rescue_all_wrong_grpo_groups() -> None:
    t1, t2, t3 = task(1), task(2), task(3)
    eps = [episode(t1, 1.0, ["Step 1: 3 + 4 = 7.\n\nAnswer: 7"], ["Answer: 8"]),
           episode(t2, 2.0, [], ["Answer: 3", "Answer: 4"])]
    example = WorkedExample(task=t2, solution="Step 1: add carefully.\n\nAnswer: 7", insight_id="x1")
    unseen = WorkedExample(task=Task(id="example:x2", family="toy", prompt="problem 9"),
                           solution="Step 1: a long worked solution of an unseen problem.\n\nAnswer: 9",
                           insight_id="x2")
    chain = Chain(task=t3, text="Step 1: verified chain.\n\nAnswer: 7", verified=True)
    sft = {e.task_id: e for e in build_sft_examples(eps, [chain], render, examples=[example, unseen])}
    assert set(sft) == {"t1", "t2", "t3", "example:x2"}
    assert (sft["t2"].source, sft["example:x2"].source, sft["t3"].source) == ("example", "example", "chain")
    assert sft["example:x2"].prompt == "<user>problem 9</user>"
    prompts = {p.task.id: p for p in build_grpo_prompts(eps, [], render, 2, random.Random(0),
                                                        examples=[example])}
    # The failed problem's group gets the example's solution as its off-policy completion.
    assert prompts["t2"].offpolicy == " add carefully.\n\nAnswer: 7" and prompts["t2"].fail_rate == 1.0
    assert prompts["t1"].offpolicy == " 3 + 4 = 7.\n\nAnswer: 7"
    # DPO keeps tree pairs only: correct against incorrect within one episode.
    assert [p.task_id for p in build_dpo_pairs(eps, render)] == ["t1"]


def test_sft_keeps_the_longest_verified_text_per_problem() -> None:
    t = task(1)
    short, long = "Answer: 7", "Step 1: 3 and 4.\n\nStep 2: 3 + 4 = 7.\n\nAnswer: 7"
    ex = WorkedExample(task=t, solution="Step 1: 7.\n\nAnswer: 7", insight_id="x")
    (only,) = build_sft_examples([episode(t, 1.0, [short, long], [])], [], render, examples=[ex])
    assert only.completion == long and only.source == "trajectory"


def test_memory_examples_become_fold_data_and_held_out_problems_stay_out(tmp_path: Path) -> None:
    from insightloop.memory.embed import HashingEmbedder
    from insightloop.memory.store import MemoryStore

    tasks = [task(i) for i in range(9)]
    cfg = Config()
    with MemoryStore.open(tmp_path, HashingEmbedder(), cfg.memory) as store:
        for i, t in enumerate(tasks):
            store.add_episode(episode(t, float(i), ["Answer: 7"], ["Answer: 1"]))
        for t in tasks[:6]:
            store.add_insight(t.prompt, "example", source_task=t.id, status="active",
                              solution=f"Step 1: {t.id} worked.\n\nAnswer: 7")
        store.add_insight("problem 77", "example", status="active", solution="Answer: 7")  # no known task
        store.add_insight("problem 78", "example", status="pending", solution="Answer: 7")  # not admitted
        store.add_insight("A rule, not an example.", "strategy", status="active")
    from insightloop.memory.chains import append_chains

    append_chains(tmp_path, [Chain(task=t, text="Answer: 7", verified=True) for t in tasks])
    data = load_fold_data(tmp_path, cfg)
    held = {t.id for t in data.validation}
    assert len(held) == 3  # a third of the nine problems (gate_slice allows 64)
    assert not held & {ep.task.id for ep in data.episodes}
    assert not held & {c.task.id for c in data.chains} and len(data.chains) == 6
    assert not held & {x.task.id for x in data.examples}
    ids = {x.task.id for x in data.examples}
    assert ids <= {t.id for t in tasks[:6]} | {i for i in ids if i.startswith("example:")}
    assert sum(i.startswith("example:") for i in ids) == 1  # the active one without a task, unlabeled
    known = next(x for x in data.examples if not x.task.id.startswith("example:"))
    assert known.task.answer == "7"  # its source task: usable as a verified GRPO completion


def test_reference_answers_join_the_fold_data_only_when_asked_and_never_for_held_out_problems(
        tmp_path: Path) -> None:
    from insightloop.memory.embed import HashingEmbedder
    from insightloop.memory.store import MemoryStore

    labeled = [task(i, answer=str(i)) for i in range(8)]
    unlabeled = Task(id="u", family="toy", prompt="problem u")
    multi = Task(id="m", family="toy", prompt="problem m", answer="a\nb", verifier="exact")
    with MemoryStore.open(tmp_path, HashingEmbedder(), Config().memory) as store:
        for i, t in enumerate([*labeled, unlabeled, multi]):
            store.add_episode(episode(t, float(i), [], ["Answer: wrong"]))
            store.add_episode(episode(t, float(i) + 0.5, [], ["Answer: wrong again"]))  # seen twice
    assert load_fold_data(tmp_path, Config()).examples == []  # off by default: only what was verified
    data = load_fold_data(tmp_path, load_config(overrides=["fold.reference_answers=true"]))
    held = {t.id for t in data.validation}
    refs = {x.task.id: x.solution for x in data.examples}
    assert held and not held & set(refs)  # a gate problem's label never reaches training
    assert set(refs) == {t.id for t in [*labeled, multi]} - held  # one per labeled problem, none unlabeled
    for t in labeled:
        if t.id in refs:
            assert refs[t.id] == f"Step 1: Answer: {t.answer}"
    if "m" in refs:
        assert refs["m"] == "Step 1: Answer:\na\nb"
    sft = build_sft_examples(data.episodes, data.chains, render, examples=data.examples)
    assert {e.task_id for e in sft} == set(refs) and {e.source for e in sft} == {"example"}
    # labeled problems the run has no episode of join the training side; held-out ones stay out
    extra = [task(i, answer=str(i)) for i in range(20, 23)]
    more = load_fold_data(tmp_path, load_config(overrides=["fold.reference_answers=true"]),
                          labeled=[*extra, *data.validation, labeled[0]])
    assert {t.id for t in more.validation} == held
    got = [x.task.id for x in more.examples]
    assert sorted(got) == sorted(set(refs) | {t.id for t in extra}) and len(got) == len(set(got))
    off = load_fold_data(tmp_path, Config(), labeled=extra)
    assert off.examples == []  # labels are learned only when asked


def test_without_held_out_matches_problem_text_too() -> None:
    val = task(1)
    twin = Task(id="other-id", family="toy", prompt="problem   1")  # same problem under another id
    data = FoldData(chains=[Chain(task=twin, text="Answer: 7", verified=True)],
                    examples=worked_examples([], {}) + [WorkedExample(task=val, solution="A", insight_id="x")],
                    validation=[val])
    clean = without_held_out(data)
    assert clean.chains == [] and clean.examples == []


# ------------------------------------------------------------------------------------- the gate


def test_interval_rule_keeps_noise_and_rejects_a_clear_drop() -> None:
    same = decide([1, 0] * 32, [1, 0] * 32, 0.05, 1.0, rule="interval")
    assert same.accepted and same.ci_low == same.ci_high == 0.0 and same.n == 64
    # 4 of 64 problems flip each way: no evidence either way, kept.
    noisy = decide([1] * 4 + [0] * 4 + [1, 0] * 28, [0] * 4 + [1] * 4 + [1, 0] * 28, 0.05, 1.0, rule="interval")
    assert noisy.accepted and noisy.ci_low < 0 < noisy.ci_high and "within noise" in noisy.reason
    # 16 of 64 lost and 2 gained: the whole interval is below zero and the drop exceeds the tolerance.
    worse = decide([1] * 16 + [0] * 2 + [0] * 46, [0] * 16 + [1] * 2 + [0] * 46, 0.05, 1.0, rule="interval")
    assert not worse.accepted and worse.ci_high < 0 and "worse beyond noise" in worse.reason
    # A drop within the tolerance is kept even when it is consistent.
    small = decide([1] * 2 + [0] * 62, [0] * 64, 0.05, 1.0, rule="interval")
    assert small.accepted and small.new_accuracy < small.old_accuracy


def test_better_mode_and_mcnemar_rule() -> None:
    gain = ([0] * 14 + [1] * 50, [1] * 14 + [1] * 50)
    assert decide(*gain, 0.05, 1.0, rule="interval", require="better").accepted
    assert not decide([1, 0] * 32, [1, 0] * 32, 0.05, 1.0, rule="interval", require="better").accepted
    m = decide(*gain, 0.05, 1.0, rule="mcnemar", require="better")
    assert m.accepted and m.p_value is not None and m.p_value < 0.05 and m.ci_low is None
    lost = decide([1] * 12 + [0] * 52, [0] * 64, 0.05, 1.0, rule="mcnemar")
    assert not lost.accepted and lost.p_value < 0.05
    few = decide([1, 1, 0], [0, 0, 0], 0.05, 1.0, rule="mcnemar")  # 2 discordant: p = 0.5
    assert few.accepted and few.p_value == pytest.approx(0.5)


def test_gate_settings_are_configurable_and_default_to_a_powered_interval() -> None:
    fc = Config().fold
    assert (fc.gate_rule, fc.gate_require, fc.gate_level, fc.gate_slice) == ("interval", "no_worse", 0.95, 64)
    cfg = load_config(None, ["fold.gate_rule=mcnemar", "fold.gate_require=better", "fold.gate_level=0.9"])
    assert (cfg.fold.gate_rule, cfg.fold.gate_require, cfg.fold.gate_level) == ("mcnemar", "better", 0.9)


def test_gate_measures_through_the_live_backend_and_rolls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from insightloop.rl import gate as gate_mod

    class Live:
        def __init__(self) -> None:
            self.loaded: list[str] = []

        def load_weights(self, path: str) -> None:
            self.loaded.append(str(path))

    lm = Live()
    monkeypatch.setattr(gate_mod, "scores", lambda lm_, tasks, search, ins=None:
                        [1.0] * len(tasks) if lm_.loaded[-1] == "old" else [0.0] * len(tasks))
    result = gate_mod.gate(lm, "old", "new", [task(i) for i in range(8)], Config())
    assert not result.accepted and result.rule == "interval" and lm.loaded == ["old", "new", "old"]
    assert result.task_ids == [f"t{i}" for i in range(8)]


# ------------------------------------------------------------------------------------- LoRA on a CPU


def test_lora_is_the_default_on_a_cpu_and_the_learning_rate_follows() -> None:
    fc = Config().fold
    assert fc.lora is None and fc.lr is None
    cpu, gpu = resolved(fc, on_gpu=False), resolved(fc, on_gpu=True)
    assert (cpu.lora, cpu.lr, gpu.lora, gpu.lr) == (True, LORA_LR, False, FULL_LR)
    mine = resolved(fc.model_copy(update={"lora": False, "lr": 3e-5}), on_gpu=False)
    assert (mine.lora, mine.lr) == (False, 3e-5)


# ------------------------------------------------------------------------------------- re-credit


def test_an_accepted_fold_resets_the_admission_baselines_a_rejected_one_does_not(tmp_path: Path) -> None:
    from insightloop.agent.learn.loop import Learner
    from insightloop.core import events as ev
    from test_loop import FakeAnalyst, FakePolicy, FakeStore

    class Admission:
        resets = 0

        def reset(self) -> None:
            self.resets += 1

    cfg = Config()
    cfg.loop = cfg.loop.model_copy(update={"fold_every": 1})
    verdicts = iter([(True, {"index": 1}), (False, {"index": 2})])
    events: list[ev.Event] = []
    learner = Learner(FakePolicy(), FakeAnalyst(), FakeStore(), cfg, random.Random(0), events.append,  # type: ignore[arg-type]
                      run_dir=tmp_path, fold=lambda: next(verdicts))
    learner.curator.admission = Admission()  # type: ignore[assignment]
    learner._maybe_fold()
    assert learner.curator.admission.resets == 1  # type: ignore[union-attr]
    learner._maybe_fold()
    assert learner.curator.admission.resets == 1  # type: ignore[union-attr]
    assert [e.ok for e in events if isinstance(e, ev.FoldFinished)] == [True, False]


# ------------------------------------------------------------------------------------- status and console


def write_fold(run_dir: Path, index: int, accepted: bool, settled: float = 0.0) -> None:
    from insightloop.rl.verdict import decide as verdict

    gate = verdict([1, 0, 1, 0], [1, 1, 1, 0] if accepted else [0, 0, 0, 0], 0.05, 1.0, rule="interval")
    folder = ck.checkpoints_dir(run_dir) / str(index)
    folder.mkdir(parents=True)
    m = ck.Manifest(index=index, base_model="embedded", method="sft", steps=2, lora=True,
                    gate=gate.model_dump(exclude={"old_scores", "new_scores", "task_ids"}),
                    status="accepted" if accepted else "rejected", seconds=42.0 + index, settled=settled)
    (folder / ck.MANIFEST).write_text(m.model_dump_json())
    if accepted:
        ck.set_current(run_dir, folder)


def test_status_json_and_status_command_show_each_fold(tmp_path: Path) -> None:
    from insightloop.apps.cli.daemon import status_table
    from insightloop.apps.daemon.status import read_status
    from rich.console import Console
    from test_daemon import make

    d, _, _ = make(tmp_path)
    d.run_once()
    assert read_status(tmp_path).folds == []
    write_fold(tmp_path, 1, True)
    write_fold(tmp_path, 2, False)
    d.run_once()
    st = read_status(tmp_path)
    assert [(f.index, f.status) for f in st.folds] == [(1, "accepted"), (2, "rejected")]
    assert st.fold_totals == {"accepted": 1, "rejected": 1}
    last = st.folds[-1]
    assert (last.old_accuracy, last.new_accuracy, last.n, last.seconds) == (0.5, 0.0, 4, 44.0)
    assert last.rule == "interval" and last.ci_high is not None and last.ci_high <= 0
    raw = json.loads((tmp_path / "status.json").read_text())
    assert raw["folds"][0]["status"] == "accepted"
    console = Console(width=200, record=True)
    console.print(status_table(st, tmp_path, False))
    shown = console.export_text()
    assert "1 accepted, 1 rejected; last: #2 sft rejected 0.50 → 0.00 on 4 held-out" in shown


def test_daemon_shows_a_fold_in_progress_then_its_result(tmp_path: Path) -> None:
    from insightloop.apps.daemon.status import read_status
    from insightloop.core import events as ev
    from test_daemon import make

    d, _, _ = make(tmp_path)
    d.on_event(ev.FoldStarted(episodes=4))
    assert read_status(tmp_path).state.startswith("folding")
    write_fold(tmp_path, 1, True)
    d.on_event(ev.FoldFinished(episodes=4, ok=True, detail={"index": 1}))
    st = read_status(tmp_path)
    assert st.state == "working" and st.folds[0].status == "accepted"
    logs = [json.loads(line) for line in (tmp_path / "logs" / "daemon.jsonl").read_text().splitlines()]
    assert {"fold_started", "fold_finished", "fold_result"} <= {r["msg"] for r in logs}


def test_checkpoint_sync_does_not_reload_weights_the_backend_already_serves(tmp_path: Path) -> None:
    from insightloop.apps.daemon.guard import CallStats, GuardedLM
    from insightloop.apps.daemon.run import CheckpointSync
    from test_daemon import FakeLM

    class Live(FakeLM):
        def __init__(self) -> None:
            super().__init__()
            self.model_path = "base"
            self.loads = 0

        def load_weights(self, path: Path) -> None:
            self.loads += 1
            self.model_path = str(path)

    lm = Live()
    sync = CheckpointSync(tmp_path, GuardedLM(lm, CallStats(), threading.Event()))
    write_fold(tmp_path, 1, True)
    lm.model_path = str(ck.checkpoints_dir(tmp_path) / "1")  # the gate's hand-off already swapped it in
    assert sync() == "1" and lm.loads == 0
    write_fold(tmp_path, 2, True)  # a fold elsewhere moved CURRENT: loaded here
    assert sync() == "2" and lm.loads == 1 and lm.model_path.endswith("2")


def test_console_checkpoints_and_insight_history_mark_the_folds(tmp_path: Path) -> None:
    from insightloop.apps.console.commands import Inspector
    from insightloop.memory.embed import HashingEmbedder
    from insightloop.memory.store import MemoryStore
    from rich.console import Console

    now = [100.0]
    with MemoryStore.open(tmp_path, HashingEmbedder(), clock=lambda: now[0]) as store:
        ins, _ = store.add_insight("Write the answer line last.", "format", status="active")
        for i in range(4):  # credited at t = 101..104; the fold lands between the 2nd and the 3rd
            now[0] = 101.0 + i
            store.credit([ins.id], task(i), 1.0 if i < 2 else 0.0, 0.5, f"ep{i}")
    write_fold(tmp_path, 1, True, settled=102.5)
    write_fold(tmp_path, 2, False, settled=103.5)
    with MemoryStore.open(tmp_path, HashingEmbedder(), readonly=True) as store:
        inspector = Inspector(tmp_path, store)
        console = Console(width=200, record=True)
        console.print(inspector.execute(f"insight {ins.id}"))
        console.print(inspector.execute("checkpoints"))
    out = console.export_text()
    lines = out.splitlines()
    mark = next(i for i, line in enumerate(lines) if "checkpoint 1 serves from here" in line)
    rows = [next(i for i, line in enumerate(lines) if f" ep{n} " in line) for n in range(4)]
    assert rows[1] < mark < rows[2] and sum("serves from here" in line for line in lines) == 1
    assert "since the last fold (checkpoint 1): mean credit -0.50 over 2 uses" in out
    assert "change in [" in out and "43" in out and "44" in out  # the interval and each fold's seconds


def test_held_out_problems_stay_stable_as_the_run_grows() -> None:
    """Folds of a growing run: a problem an earlier fold trained on never becomes a held-out one."""
    from insightloop.rl.sources import split_validation

    def eps(n: int) -> list[Episode]:
        return [Episode(id=f"e{i}", task=Task(id=f"t{i}", family="f", prompt=f"p{i}", answer="1"))
                for i in range(n)]

    trained: set[str] = set()
    sizes = []
    for n in (2, 5, 20, 60, 200, 400):
        train, val = split_validation(eps(n), 16, seed=0)
        held = {t.id for t in val}
        assert held and not held & trained and len(held) <= 16
        assert {e.task.id for e in train} | held == {f"t{i}" for i in range(n)}
        trained |= {e.task.id for e in train}
        sizes.append(len(held))
    assert sizes[-1] == 16 and 0.1 < sizes[3] / 60 < 0.5  # about a third of a small run, capped later
    one = eps(1)
    assert split_validation(one, 16, seed=0) == (one, [one[0].task])
