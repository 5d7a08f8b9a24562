"""MCTS and `insightloop solve` on the embedded SmolLM2 policy and real bundled tasks."""

from __future__ import annotations

import json

import pytest
from insightloop.agent.search.solve import solve, solve_many
from insightloop.core.budget import Budget
from insightloop.core.config import load_config
from insightloop.core.episode import Episode
from insightloop.core.lm import LM
from insightloop.evals.suites import load_suite
from insightloop.memory.episodes import load_episodes
from typer.testing import CliRunner

SMALL = ["search.rollouts=4", "search.step_tokens=16", "search.answer_tokens=32", "search.max_depth=3"]


@pytest.fixture(scope="module")
def lm() -> LM:
    from insightloop.agent.backends import make_lm

    return make_lm(load_config(None, SMALL).policy)


def _check_tree(ep: Episode, cap: int) -> None:
    nodes = ep.tree.nodes
    for n in nodes:
        own = 1 if n.reward is not None else 0
        assert n.visits == sum(nodes[c].visits for c in n.children) + own, n.id
        assert n.value_sum == pytest.approx(sum(nodes[c].value_sum for c in n.children) + (n.reward or 0.0))
        for c in n.children:
            assert nodes[c].parent == n.id and nodes[c].depth == n.depth + 1
    assert all(leaf.reward is not None for leaf in ep.tree.leaves())  # every leaf verified
    assert 1 <= ep.rollouts <= cap and ep.tree.root.visits == ep.rollouts == len(ep.trajectories)
    assert max(n.depth for n in nodes) <= 3
    assert ep.completion_tokens > 0 and ep.prompt_tokens > 0


@pytest.mark.real
def test_mcts_tree_is_consistent_on_the_embedded_model(lm: LM) -> None:
    cfg = load_config(None, SMALL).search
    tasks = load_suite("bbh/boolean_expressions", limit=2) + load_suite("bbh/object_counting", limit=1)
    run = Budget(max_rollouts=10).start()  # the third task gets only the 2 rollouts left
    episodes = solve_many(tasks, lm, cfg, budget=run)
    assert [e.task.id for e in episodes] == [t.id for t in tasks]
    for ep in episodes:
        _check_tree(ep, cap=4)
        assert ep.reward is not None and ep.best is not None
        assert ep.reward.score == max(t.reward for t in ep.trajectories)
        assert Episode.model_validate_json(ep.model_dump_json()) == ep
    assert run.rollouts == sum(e.rollouts for e in episodes) <= 10
    assert episodes[2].rollouts <= 2
    assert run.tokens == sum(e.prompt_tokens + e.completion_tokens for e in episodes)


@pytest.mark.real
def test_same_seed_gives_the_same_tree(lm: LM) -> None:
    cfg = load_config(None, [*SMALL, "search.rollouts=3", "search.seed=5"]).search
    task = load_suite("bbh/boolean_expressions", limit=3)[2]
    a, b = solve(task, lm, cfg), solve(task, lm, cfg)
    assert [n.step_text for n in a.tree.nodes] == [n.step_text for n in b.tree.nodes]
    assert a.trajectories == b.trajectories


@pytest.mark.real
def test_solve_cli_adhoc_json_and_run_dir(tmp_path) -> None:
    from insightloop.apps.cli.main import app

    args = ["solve", "--prompt", "What is 6 times 7?", "--verifier", "numeric", "--answer", "42", "--json",
            "--budget", "2", "--strategy", "sample", "--run-dir", str(tmp_path)]
    for item in SMALL[1:]:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["tasks"] == 1 and report["rollouts"] == 2 and report["strategy"] == "sample"
    assert report["rows"][0]["reference"] == "42"
    (ep,) = load_episodes(tmp_path)
    assert ep.rollouts == 2 and ep.task.answer == "42"


def test_solve_cli_errors_exit_2() -> None:
    from insightloop.apps.cli.main import app

    runner = CliRunner()
    bad_suite = runner.invoke(app, ["solve", "--suite", "no_such_suite"])
    assert bad_suite.exit_code == 2 and "no_such_suite" in bad_suite.output
    bad_cfg = runner.invoke(app, ["solve", "--prompt", "1+1?", "--set", "search.width=0"])
    assert bad_cfg.exit_code == 2 and "search.width" in bad_cfg.output
    neither = runner.invoke(app, ["solve"])
    assert neither.exit_code == 2
    bad_verifier = runner.invoke(app, ["solve", "--prompt", "1+1?", "--verifier", "nope"])
    assert bad_verifier.exit_code == 2 and "nope" in bad_verifier.output


class _Lockstep:
    """The same backend seen only through `LM.generate`: the driver falls back to lockstep rounds."""

    def __init__(self, inner: LM) -> None:
        self.inner = inner
        self.name = inner.name

    def generate(self, reqs: list) -> list:
        return self.inner.generate(reqs)

    def score(self, reqs: list) -> list:
        return self.inner.score(reqs)  # type: ignore[attr-defined]


@pytest.mark.real
def test_streaming_and_lockstep_drivers_build_the_same_trees(lm: LM) -> None:
    from insightloop.core.lm import StreamingLM

    assert isinstance(lm, StreamingLM) and not isinstance(_Lockstep(lm), StreamingLM)
    cfg = load_config(None, [*SMALL, "search.rollouts=4", "search.seed=3"]).search
    tasks = load_suite("bbh/boolean_expressions", limit=4)
    streamed = solve_many(tasks, lm, cfg, max_active=4)
    stepped = solve_many(tasks, _Lockstep(lm), cfg, max_active=4)
    for a, b in zip(streamed, stepped, strict=True):
        assert [n.step_text for n in a.tree.nodes] == [n.step_text for n in b.tree.nodes]
        assert [t.text for t in a.trajectories] == [t.text for t in b.trajectories]
