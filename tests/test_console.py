"""The console's command layer, rendered into `Console(file=io.StringIO())`.

Fast tests run on a run directory written through the real store (SQLite + FAISS) with the hashing
embedder and synthetic episodes. The `real` tests open a run directory produced by the embedded
model through the real learning loop (see `console_run.py`).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from insightloop.apps.console.chart import line_chart
from insightloop.apps.console.commands import Inspector
from insightloop.apps.console.curve import EpisodePoint, learning_curve
from insightloop.apps.console.parsing import COMMANDS
from insightloop.apps.console.views import ErrorText
from insightloop.core.config import MemoryConfig
from insightloop.core.episode import Episode, SearchTree, Trajectory
from insightloop.core.task import Reward, Task
from insightloop.memory.embed import HashingEmbedder
from insightloop.memory.store import MemoryStore
from insightloop.rl.checkpoints import Manifest
from rich.console import Console, RenderableType


def render(obj: RenderableType, width: int = 160) -> str:
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None, legacy_windows=False).print(obj)
    return buf.getvalue()


def make_episode(n: int, correct: bool, used: list[tuple[str, str]], t0: float) -> Episode:
    task = Task(id=f"t{n % 4}", family="arith", prompt=f"What is {n} + {n}?", answer=str(2 * n),
                verifier="numeric")
    tree = SearchTree()
    a = tree.add(0, f"Step 1: add {n} and {n}.\n", visits=3, value_sum=2.0, reward=1.0)
    tree.add(a.id, f"Step 2: so the sum is {2 * n}.\n", visits=2, value_sum=2.0, reward=1.0,
             rollout_text=f"Answer: {2 * n}")
    tree.add(0, "Step 1: multiply them.\n", visits=1, value_sum=0.0, reward=0.0, rollout_text="Answer: 0")
    tree.nodes[0].visits, tree.nodes[0].value_sum = 4, 2.0
    best = Trajectory(node_ids=[1, 2], steps=[tree.nodes[1].step_text, tree.nodes[2].step_text],
                      text=tree.path_text(2) + f"Answer: {2 * n}", reward=1.0 if correct else 0.0)
    return Episode(id=f"ep{n:03d}", task=task, tree=tree, trajectories=[best], best=best,
                   insights_used=[text for _, text in used], answer=str(2 * n if correct else 0),
                   reward=Reward(score=1.0 if correct else 0.0), rollouts=3, prompt_tokens=100,
                   completion_tokens=40, started=t0 + n, finished=t0 + n + 0.5,
                   meta={"phase": "train", "insight_ids": [i for i, _ in used]})


PAIR_META = {
    "pair_kind": "hard", "divergence_step": 2,
    "positive": "Step 1: read the numbers.\nStep 2: add them column by column.\nAnswer: 42",
    "negative": "Step 1: read the numbers.\nStep 2: multiply them.\nAnswer: 0",
    "step_critique": "multiplying instead of adding", "strategic_pivot": "check which operation is asked",
    "success_pattern": "add when the question says sum", "failure_mode": "wrong operation",
}


@pytest.fixture()
def run_dir(tmp_path: Path) -> Path:
    """A run directory with three insights, credit on several tasks, 12 episodes and two folds."""
    cfg = MemoryConfig()
    t0 = time.time() - 100
    with MemoryStore.open(tmp_path, HashingEmbedder(), cfg) as store:
        good, _ = store.add_insight("When a question asks for a sum, add the numbers column by column.",
                                    "strategy", "sums", "arith", "ep000", "t0", "SmolLM2", PAIR_META)
        store.record_admission(good.id, True, "solved its source problem")
        bad, _ = store.add_insight("Always multiply the two numbers first.", "pitfall", "", "arith",
                                   "ep001", "t1", "SmolLM2", {})
        store.record_admission(bad.id, True, "solved its source problem")
        store.add_insight("Write the final answer on its own line.", "format", "", "arith", None, None,
                          "SmolLM2", {})
        for n in range(12):
            used = [(good.id, good.text)] if n % 2 else ([(bad.id, bad.text)] if n % 3 == 0 else [])
            correct = bool(n % 2) or n % 4 == 2
            ep = make_episode(n, correct, used, t0)
            store.add_episode(ep)
            if used:
                store.credit([used[0][0]], ep.task, float(correct), 0.25, ep.id)
    for index, accepted in ((1, True), (2, False)):
        folder = tmp_path / "checkpoints" / str(index)
        folder.mkdir(parents=True)
        manifest = Manifest(index=index, base_model="SmolLM2-135M-Instruct", method="grpo", steps=4,
                            parent=None if index == 1 else "1", data_counts={"prompts": 8},
                            metrics={"loss": 0.5}, gate={"accepted": accepted, "old_accuracy": 0.25,
                                                                "new_accuracy": 0.5, "n": 4},
                            status="accepted" if accepted else "rejected")
        (folder / "manifest.json").write_text(manifest.model_dump_json())
    (tmp_path / "checkpoints" / "CURRENT").write_text("1\n")
    (tmp_path / "status.json").write_text(json.dumps({
        "state": "running", "budget": {"rollouts": {"window": "hour", "used": 36.0, "cap": 100, "left": 64}},
        "counters": {"done": 12}, "accuracy": 0.75, "accuracy_n": 12}))
    return tmp_path


@pytest.fixture()
def inspector(run_dir: Path) -> Inspector:
    embedder, cfg = HashingEmbedder(), MemoryConfig()
    store = MemoryStore.open(run_dir, embedder, cfg, readonly=True)
    yield Inspector(run_dir, store, lambda: MemoryStore.open(run_dir, embedder, cfg))
    store.close()


def ids(inspector: Inspector) -> dict[str, str]:
    """First word of each insight's text -> id."""
    return {i.text.split()[0]: i.id for i in inspector.store.list_insights()}


def test_help_lists_every_command(inspector: Inspector) -> None:
    out = render(inspector.execute("help"))
    for name in COMMANDS:
        assert name in out
    assert "diff V1 V2" in render(inspector.execute("help diff"))


def test_insights_table_sorts_and_filters(inspector: Inspector) -> None:
    out = render(inspector.execute("insights --sort utility"))
    lines = [line for line in out.splitlines() if "arith" in line or "When a question" in line]
    assert "When a question asks" in out and "Always multiply" in out
    assert out.index("When a question asks") < out.index("Always multiply")  # helped ranks above hurt
    assert "pending" in render(inspector.execute("insights --status pending"))
    assert "Always multiply" not in render(inspector.execute("insights --status pending"))
    assert lines is not None
    assert "invalid choice" in render(inspector.execute("insights --sort nonsense"))


def test_insight_detail_shows_history_effect_provenance_and_contrast(inspector: Inspector) -> None:
    good = ids(inspector)["When"]
    out = render(inspector.execute(f"insight {good[:6]}"), width=200)  # a unique prefix works
    assert "When a question asks for a sum" in out
    assert "utility history" in out and "running mean" in out
    assert "where it helped or hurt" in out and "helped" in out
    assert "ep000" in out  # the source episode
    assert "add them column by column" in out and "multiply them" in out  # both sides of the pair
    assert "▶ 2" in out  # the divergence line is marked
    assert "they diverge at step 2" in out
    assert "check which operation is asked" in out  # the analyst's strategic pivot
    bad = ids(inspector)["Always"]
    assert "hurt" in render(inspector.execute(f"insight {bad}"))


def test_unknown_ids_and_commands_give_messages_not_tracebacks(inspector: Inspector) -> None:
    assert "no insight 'zzz'" in render(inspector.execute("insight zzz"))
    assert "no episode 'nope'" in render(inspector.execute("episode nope"))
    assert "unknown command 'frobnicate'" in render(inspector.execute("frobnicate"))
    assert "usage: insight ID" in render(inspector.execute("insight"))
    assert "does not exist" in render(inspector.execute("diff 0 9999"))
    assert "invalid int value" in render(inspector.execute("diff one two"))
    assert "cannot parse" in render(inspector.execute('search "unclosed'))
    assert "nodes 0..3" in render(inspector.execute("episode ep001 --node 99"))


def test_search_ranks_the_matching_insight_first(inspector: Inspector) -> None:
    out = render(inspector.execute("search final answer own line"))
    assert out.index("Write the final answer") < out.index("Always multiply")


def test_episodes_and_episode_tree(inspector: Inspector) -> None:
    out = render(inspector.execute("episodes"))
    assert out.index("ep011") < out.index("ep000")  # newest first
    failed = render(inspector.execute("episodes --failed"))
    assert "ep000" in failed and "ep001" not in failed
    tree = render(inspector.execute("episode ep001"), width=200)
    assert "#1 n=3 v=0.67 r=1" in tree and "#3 n=1 v=0.00 r=0" in tree
    assert "★ chosen" in tree
    assert "When a question asks" in tree  # the insight used, by id and text
    node = render(inspector.execute("episode ep001 --node 2"), width=200)
    assert "Step 2: so the sum is 2." in node and "path from the root" in node and "Answer: 2" in node


def test_versions_and_diff(inspector: Inspector) -> None:
    out = render(inspector.execute("versions --limit 100"), width=200)
    assert "credit" in out and "admission" in out and "episode" in out
    diff = render(inspector.execute("diff 0 2"), width=200)
    assert "added" in diff and "When a question asks" in diff


def test_curation_changes_the_store_and_shows_in_diff(inspector: Inspector, run_dir: Path) -> None:
    found = ids(inspector)
    before = inspector.store.version
    out = render(inspector.execute(f"reject {found['Always']} misleading on sums"))
    assert "active -> retired" in out
    assert inspector.store.get(found["Always"]).status == "retired"
    render(inspector.execute(f"approve {found['Write']}"))
    assert inspector.store.get(found["Write"]).status == "active"
    render(inspector.execute(f"edit {found['When']} When asked for a sum, add the numbers."))
    assert inspector.store.get(found["When"]).text == "When asked for a sum, add the numbers."
    assert inspector.store.version == before + 3
    diff = render(inspector.execute(f"diff {before} {before + 3}"), width=220)
    assert "retired" in diff and "When asked for a sum, add the numbers." in diff and "modified" in diff
    kinds = [e.kind for e in inspector.store.events(before)]
    assert kinds == ["status", "status", "edit"]
    assert "already retired" in render(inspector.execute(f"reject {found['Always']}"))


def test_reads_a_live_run_while_a_writer_commits(inspector: Inspector, run_dir: Path) -> None:
    """The read-only console sees each committed change on its next command (as with a daemon)."""
    before = inspector.store.version
    with MemoryStore.open(run_dir, HashingEmbedder(), MemoryConfig()) as daemon:
        ins, _ = daemon.add_insight("Check the units before answering.", "constraint", "", "arith", None,
                                    None, "SmolLM2", {})
        daemon.add_episode(make_episode(40, True, [], time.time()))
        assert "Check the units" in render(inspector.execute("insights --sort recent"))
        assert "ep040" in render(inspector.execute("episodes"))
        assert f"v{before + 2}" in render(inspector.execute("versions"))
        assert "Check the units" in render(inspector.execute("search units before answering"))


def test_curation_needs_a_writer(run_dir: Path) -> None:
    with MemoryStore.open(run_dir, HashingEmbedder(), MemoryConfig(), readonly=True) as store:
        ro = Inspector(run_dir, store, writer=None)
        some = store.list_insights()[0].id
        assert "read-only" in render(ro.execute(f"reject {some}"))


def test_curve_terminal_chart_and_png(inspector: Inspector, tmp_path: Path) -> None:
    png = tmp_path / "out" / "curve.png"
    png.parent.mkdir()
    out = render(inspector.execute(f"curve --window 4 --png {png}"), width=120)
    assert "with insights" in out and "without insights" in out and "lift" in out
    assert "episodes: 12" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in png.parent.iterdir()] == ["curve.png"]  # no temporary file left behind


def test_curve_png_into_a_missing_directory_creates_nothing(inspector: Inspector, tmp_path: Path) -> None:
    png = tmp_path / "nowhere" / "deeper" / "curve.png"
    result = inspector.execute(f"curve --png {png}")
    out = render(result, width=200)
    assert isinstance(result, ErrorText) and "directory does not exist" in out
    assert len(out.strip().splitlines()) == 1
    assert not (tmp_path / "nowhere").exists()


def test_budget_sums_episodes_and_reads_status(inspector: Inspector) -> None:
    out = render(inspector.execute("budget"))
    assert "rollouts" in out and " 36 " in out  # 12 episodes x 3 rollouts, and status.json's field
    assert "1680" in out  # 12 x 140 tokens
    assert "36 of 100, 64 left" in out and "rollouts this hour" in out and "75%" in out


def test_checkpoints_show_gate_results(inspector: Inspector) -> None:
    out = render(inspector.execute("checkpoints"), width=200)
    assert "accepted" in out and "rejected" in out and "serving: 1" in out and "prompts=8" in out
    assert "0.25 → 0.50 (n=4)" in out and "loss=0.5" in out


def test_completion(inspector: Inspector) -> None:
    assert inspector.complete("ins", "ins") == ["insight", "insights"]
    some = inspector.store.list_insights()[0].id
    assert some in inspector.complete(f"insight {some[:3]}", some[:3])
    assert "--failed" in inspector.complete("episodes --f", "--f")
    assert "ep011" in inspector.complete("episode ep01", "ep01")


def test_learning_curve_numbers() -> None:
    pts = [EpisodePoint(finished=i, correct=c, with_insights=w)
           for i, (c, w) in enumerate([(False, False), (True, True), (False, False), (True, True)])]
    curve = learning_curve(pts, window=2)
    assert curve.overall == [0.0, 0.5, 0.5, 0.5]
    assert curve.with_insights == [None, 1.0, 1.0, 1.0]
    assert curve.without_insights == [0.0, 0.0, 0.0, 0.0]
    assert curve.lift == [None, 1.0, 1.0, 1.0] and curve.final_lift == 1.0
    assert (curve.n_with, curve.n_without) == (2, 2)


def test_line_chart_places_markers() -> None:
    chart = line_chart([("a", [0.0, 1.0], "", "x")], 0.0, 1.0, height=3, width=10).plain.splitlines()
    assert chart[0].endswith("┤     xxxxx") and chart[2].endswith("┤xxxxx     ")


# ---- a run directory made by the embedded model through the real learning loop ---------------
REAL_SETTINGS = ["search.rollouts=3", "search.width=2", "search.max_depth=2", "search.step_tokens=24",
                 "search.answer_tokens=40", "loop.baseline_samples=2", "loop.analyst_tokens=64",
                 "loop.max_candidates=2", "loop.synthesize=false", "loop.pairs=1"]
REAL_SUITE, REAL_TRAIN, REAL_BUDGET = "bbh/boolean_expressions", 2, 10


def build_real_run(where: Path, n_train: int = REAL_TRAIN, budget: int = REAL_BUDGET, seed: int = 1,
                   settings: list[str] | None = None) -> Path:
    """The learning loop (`Learner.train`) with the embedded SmolLM2 and MiniLM at a tiny rollout
    budget: real baseline and MCTS episodes, credit, and whatever insights it admits. Built once per
    test session (a marker file says it is done) and shared by test_console_pty.py."""
    import random

    from insightloop.agent.backends import make_lm
    from insightloop.agent.learn.loop import Learner
    from insightloop.core.budget import Budget
    from insightloop.core.config import load_config
    from insightloop.evals.suites import load_suite
    from insightloop.memory.embed import make_embedder

    done = where / "train.json"
    if done.is_file():
        return where
    cfg = load_config(None, REAL_SETTINGS + (settings or []))
    tasks = random.Random(seed).sample(load_suite(REAL_SUITE), n_train)
    policy = make_lm(cfg.policy)
    with MemoryStore.open(where, make_embedder(cfg.memory.embedder), cfg.memory) as store:
        learner = Learner(policy, policy, store, cfg, random.Random(seed), run_dir=where)
        report = learner.train(tasks, Budget(max_rollouts=budget))
    done.write_text(report.model_dump_json())
    return where


@pytest.fixture(scope="session")
def real_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_real_run(tmp_path_factory.getbasetemp() / "console-real-run")


@pytest.mark.real
def test_real_run_through_the_command_layer(real_run_dir: Path, tmp_path: Path) -> None:
    """Every read command on the run the embedded model produced, checked against the store."""
    from insightloop.apps.console.shell import open_inspector

    inspector, close = open_inspector(real_run_dir)
    try:
        episodes = inspector.store.list_episodes()
        assert episodes, "the learning loop stored no episode"
        listed = render(inspector.execute("episodes --limit 100"), width=220)
        assert all(ep.id in listed for ep in episodes)
        searched = next((ep for ep in reversed(episodes) if len(ep.tree.nodes) > 1), episodes[-1])
        tree = render(inspector.execute(f"episode {searched.id}"), width=220)
        assert searched.task.id in tree and "#0 root" in tree
        for node in searched.tree.nodes[1:4]:
            assert f"#{node.id} n={node.visits} v={node.value:.2f}" in tree
            detail = render(inspector.execute(f"episode {searched.id} --node {node.id}"), width=220)
            assert node.step_text.strip().splitlines()[0][:40] in detail
        budget = render(inspector.execute("budget"))
        assert f" {sum(ep.rollouts for ep in episodes)} " in budget
        png = tmp_path / "curve.png"
        curve = render(inspector.execute(f"curve --png {png}"), width=140)
        scored = sum(ep.reward is not None for ep in episodes)
        assert f"episodes: {scored}" in curve and png.stat().st_size > 5000
        versions = render(inspector.execute("versions --limit 1000"), width=220)
        assert "baseline" in versions and "episode" in versions
        for ins in inspector.store.list_insights(status=None):
            shown = render(inspector.execute(f"insight {ins.id}"), width=220)
            assert ins.text[:40] in shown and ins.source_episodes[0] in shown
            if "positive" in ins.meta:
                assert "▶" in shown and "contrast pair" in shown
        found = render(inspector.execute("search true and false"), width=220)
        assert "nearest" in found or "no insights" in found
    finally:
        close()


@pytest.mark.real
def test_real_curation_is_recorded_and_visible_in_diff(real_run_dir: Path, tmp_path: Path) -> None:
    """approve / reject / edit through a briefly opened writer (real MiniLM re-embedding on edit)."""
    import shutil

    from insightloop.apps.console.shell import open_inspector
    from insightloop.memory.embed import make_embedder

    run = tmp_path / "run"
    shutil.copytree(real_run_dir, run)
    with MemoryStore.open(run, make_embedder("embedded"), MemoryConfig()) as store:
        if not store.list_insights(status="active"):  # the tiny budget may admit none: curate one added here
            ins, _ = store.add_insight("When an expression mixes not, and, or: evaluate not first.",
                                       "strategy", "boolean expressions", REAL_SUITE, None, None, "human", {})
            store.record_admission(ins.id, True, "added by hand")
    inspector, close = open_inspector(run)
    try:
        target = inspector.store.list_insights(status="active")[0]
        start = inspector.store.version
        assert "-> retired" in render(inspector.execute(f"reject {target.id} not general enough"))
        assert "-> active" in render(inspector.execute(f"approve {target.id}"))
        edited = "When an expression mixes operators, evaluate not before and, and and before or."
        assert "edited" in render(inspector.execute(f'edit {target.id} "{edited}"'))
        assert inspector.store.version == start + 3
        assert inspector.store.get(target.id).text == edited
        diff = render(inspector.execute(f"diff {start} {start + 3}"), width=240)
        assert "modified" in diff and edited[:60] in diff
        assert [e.kind for e in inspector.store.events(start)] == ["status", "status", "edit"]
        hits = inspector.store.search("evaluate not before and", 1)
        assert hits and hits[0][0].id == target.id  # the edit re-embedded the text
    finally:
        close()
