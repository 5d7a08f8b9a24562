"""MCTS, sampling and episode assembly on a scripted fake LM and a fake verifier."""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from insightloop.agent.search.domain import ReasoningDomain, normalize_step, step_key
from insightloop.agent.search.mcts import MCTS, uct
from insightloop.agent.search.solve import solve, solve_many, vote
from insightloop.core.budget import Budget
from insightloop.core.config import SearchConfig
from insightloop.core.episode import Episode, Node, SearchTree
from insightloop.core.events import EpisodeFinished, EpisodeStarted
from insightloop.core.lm import Generation, GenRequest, ScoreRequest, Scores
from insightloop.core.task import Reward, Task


class FakeVerifier:
    """Parses the last `Answer: X`; full score when X equals the reference."""

    def extract(self, task: Task, completion: str) -> str | None:
        found = re.findall(r"Answer:\s*(\S+)", completion)
        return found[-1] if found else None

    def verify(self, task: Task, completion: str) -> Reward:
        got = self.extract(task, completion)
        if got is None:
            return Reward(score=0.0, error="no answer")
        if task.answer is None:  # as the real verifiers do: an unlabeled task cannot be checked
            raise ValueError("no reference answer")
        return Reward(score=float(got == task.answer), parsed_answer=got)


def _pick(*parts: object) -> int:
    return int(hashlib.sha256(repr(parts).encode()).hexdigest(), 16)


class FakeLM:
    """Deterministic in (prefix, seed, sample index), so results do not depend on batching.

    Step requests (they carry stop strings) return one of a few step bodies; some state the answer.
    Rollouts return a step and an answer, 42 or 41.
    """

    name = "fake"

    def __init__(self, steps: tuple[str, ...] = ()):
        self.steps = steps or (" add the tens", " add the ones", " Answer: 42", " check it")
        self.calls: list[list[GenRequest]] = []

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        self.calls.append(list(reqs))
        return [[self._one(r, i) for i in range(r.n)] for r in reqs]

    def _one(self, req: GenRequest, i: int) -> Generation:
        h = _pick(req.assistant_prefix, req.seed, i)
        if req.stop:
            text = self.steps[h % len(self.steps)]
        else:
            text = f" carry on\n\nAnswer: {42 - h % 2}\nextra chatter"
        return Generation(text=text, prompt_tokens=10 + len(req.assistant_prefix) // 4,
                          completion_tokens=len(text) // 4 + 1)


TASK = Task(id="t1", family="arith", prompt="What is 40 + 2?", answer="42", verifier="numeric")


def _cfg(**kw: object) -> SearchConfig:
    return SearchConfig(**{"width": 3, "rollouts": 8, "max_depth": 3, "step_tokens": 16,
                           "answer_tokens": 32, **kw})


def _solve(lm: FakeLM | None = None, task: Task = TASK, **kw: object) -> Episode:
    return solve(task, lm or FakeLM(), _cfg(**kw), verifier=FakeVerifier())


def test_uct_formula_and_unvisited_first() -> None:
    parent = Node(id=0, visits=10)
    child = Node(id=1, visits=4, value_sum=3.0)
    assert uct(parent, child, 1.4) == pytest.approx(0.75 + 1.4 * math.sqrt(math.log(10) / 4))
    assert uct(parent, Node(id=2), 1.4) == math.inf


def _two_child_tree(a: tuple[int, float], b: tuple[int, float]) -> SearchTree:
    tree = SearchTree()
    for visits, value_sum in (a, b):
        tree.add(0, "Step 1: x\n\n", visits=visits, value_sum=value_sum, reward=0.0)
    tree.root.visits = a[0] + b[0]
    return tree


def _mcts(tree: SearchTree, c: float = 1.4) -> MCTS:
    domain = ReasoningDomain(TASK, _cfg(c_uct=c), FakeVerifier())
    return MCTS(domain, Budget(max_rollouts=8), random.Random(0), tree)


def test_select_prefers_unvisited_then_uct() -> None:
    tree = _two_child_tree((3, 3.0), (0, 0.0))
    assert _mcts(tree).select().id == 2  # unvisited beats a perfect visited sibling
    # value 1.0 with 3 visits vs value 0.5 with 1 visit: exploration decides by the formula.
    tree = _two_child_tree((3, 3.0), (1, 0.5))
    scores = [uct(tree.root, tree.nodes[i], 1.4) for i in (1, 2)]
    assert _mcts(tree).select().id == 1 + scores.index(max(scores))
    assert _mcts(_two_child_tree((3, 3.0), (1, 0.5)), c=0.0).select().id == 1


def test_select_skips_closed_branches() -> None:
    tree = _two_child_tree((1, 1.0), (1, 0.0))
    tree.nodes[1].terminal = True
    assert _mcts(tree).select().id == 2
    tree.nodes[2].terminal = True
    assert _mcts(tree).select() is None


def test_backpropagation_sums_and_tree_consistency() -> None:
    ep = _solve()
    nodes = ep.tree.nodes
    for n in nodes:
        kids = [nodes[c] for c in n.children]
        own = 1 if n.reward is not None else 0
        assert n.visits == sum(k.visits for k in kids) + own
        assert n.value_sum == pytest.approx(sum(k.value_sum for k in kids) + (n.reward or 0.0))
    assert ep.tree.root.visits == ep.rollouts == 8
    assert all(leaf.reward is not None for leaf in ep.tree.leaves())
    assert max(n.depth for n in nodes) <= 3
    assert all(n.terminal for n in nodes if n.depth == 3)


def test_budget_never_exceeded_and_partial_expansion() -> None:
    lm = FakeLM(steps=(" a", " b", " c", " d", " e", " f", " g", " h"))
    ep = _solve(lm, rollouts=5)
    assert ep.rollouts == 5 and ep.tree.root.visits == 5
    step_reqs = [r for call in lm.calls for r in call if r.stop]
    assert [r.n for r in step_reqs] == [3, 2]  # the last expansion only asks for what is left
    outer = Budget(max_rollouts=4).start()
    ep = solve(TASK, FakeLM(), _cfg(rollouts=8), budget=outer, verifier=FakeVerifier())
    assert ep.rollouts == 4 and outer.rollouts == 4
    assert outer.tokens == ep.prompt_tokens + ep.completion_tokens > 0


def test_duplicate_steps_are_dropped() -> None:
    lm = FakeLM(steps=(" Add the Tens ", " add  the tens",))
    ep = _solve(lm, width=3, rollouts=3)
    first = ep.tree.root.children
    assert len(first) == 1  # three samples, one distinct step
    domain = ReasoningDomain(TASK, _cfg(), FakeVerifier())
    gens = [Generation(text=t) for t in (" x  y", " X y", "", " z")]
    assert [s.text for s in domain.propose(gens, 2)] == ["Step 2: x  y\n\n", "Step 2: z\n\n"]
    assert domain.propose(gens, 2, existing=[step_key("Step 2: z")])[-1].key == "x y"
    assert normalize_step("Step 7:  do it ", 3) == "Step 3: do it\n\n"


def test_terminal_answer_step_needs_no_rollout() -> None:
    lm = FakeLM(steps=(" Answer: 42",))
    ep = _solve(lm, width=2, rollouts=2)
    assert ep.rollouts == 1  # the only distinct child states the answer: verified, not rolled out
    assert all(r.stop for call in lm.calls for r in call)
    assert ep.correct and ep.answer == "42" and ep.best.text == "Step 1: Answer: 42\n\n"


def test_rollout_text_is_cut_after_the_answer_line() -> None:
    ep = _solve()
    for t in ep.trajectories:
        assert "extra chatter" not in t.text
        assert t.parsed_answer in {"41", "42"}


def test_determinism_for_a_fixed_seed() -> None:
    a, b = _solve(seed=7), _solve(seed=7)
    assert a.tree == b.tree and a.trajectories == b.trajectories
    assert _solve(seed=8).tree != a.tree
    # The same task solved alongside others gives the same tree (per-task random streams).
    others = [Task(id=f"o{i}", family="arith", prompt=f"{i}+1?", answer=str(i + 1)) for i in range(3)]
    many = solve_many([others[0], TASK, *others[1:]], FakeLM(), _cfg(seed=7), verifier=FakeVerifier())
    assert many[1].tree == a.tree


def test_json_round_trip() -> None:
    ep = _solve()
    back = Episode.model_validate_json(ep.model_dump_json())
    assert back == ep
    assert back.best is not None and back.tree.nodes[3].step_text == ep.tree.nodes[3].step_text


def test_best_and_answer_with_reference() -> None:
    ep = _solve()
    assert ep.best is not None and ep.best.reward == max(t.reward for t in ep.trajectories)
    assert ep.reward is not None and ep.reward.score == ep.best.reward
    assert ep.answer == ep.best.parsed_answer
    assert len(ep.trajectories) == ep.rollouts
    assert "vote_answer" in ep.meta and isinstance(ep.meta["vote_correct"], bool)


def test_value_weighted_vote_without_reference() -> None:
    from insightloop.core.episode import Trajectory

    trajs = [Trajectory(text="a", reward=0, parsed_answer="7", value=0.0),
             Trajectory(text="b", reward=0, parsed_answer="9", value=0.9),
             Trajectory(text="c", reward=0, parsed_answer="7", value=0.0),
             Trajectory(text="d", reward=0, parsed_answer=None, value=1.0)]
    assert vote(trajs) == "7"  # 2.0 vs 1.9
    trajs[1].value = 1.2
    assert vote(trajs) == "9"
    unlabeled = TASK.model_copy(update={"answer": None, "id": "u"})
    ep = _solve(task=unlabeled)
    assert ep.reward is None and ep.answer in {"41", "42"}
    assert ep.answer == vote(ep.trajectories) and ep.best.parsed_answer == ep.answer


def test_sample_strategy() -> None:
    lm = FakeLM()
    ep = _solve(lm, strategy="sample", rollouts=6)
    assert len(lm.calls) == 1 and lm.calls[0][0].n == 6
    assert ep.rollouts == 6 and len(ep.trajectories) == 6 and ep.tree.root.visits == 6
    assert all(n.terminal and n.depth == 1 for n in ep.tree.nodes[1:])
    assert ep.correct == any(t.correct for t in ep.trajectories)


def test_solve_many_batches_across_tasks_and_reports_events() -> None:
    tasks = [Task(id=f"t{i}", family="arith", prompt=f"{i}+40?", answer="42") for i in range(4)]
    lm, events = FakeLM(), []
    eps = solve_many(tasks, lm, _cfg(rollouts=6), verifier=FakeVerifier(), on_event=events.append)
    assert [e.task.id for e in eps] == [t.id for t in tasks]
    solo_calls = 0
    for t in tasks:
        one = FakeLM()
        solve(t, one, _cfg(rollouts=6), verifier=FakeVerifier())
        solo_calls += len(one.calls)
    assert len(lm.calls) < solo_calls / 2
    assert max(len({r.messages for r in call}) for call in lm.calls) == 4  # one call serves all tasks
    kinds = [type(e) for e in events]
    assert kinds.count(EpisodeStarted) == 4 and kinds.count(EpisodeFinished) == 4
    done = [e for e in events if isinstance(e, EpisodeFinished)]
    assert {e.episode_id for e in done} == {e.id for e in eps}
    assert all(e.rollouts == 6 for e in done)


def test_solve_many_respects_a_run_budget() -> None:
    tasks = [Task(id=f"t{i}", family="arith", prompt=f"{i}+40?", answer="42") for i in range(3)]
    run = Budget(max_rollouts=10).start()
    eps = solve_many(tasks, FakeLM(), _cfg(rollouts=4), budget=run, verifier=FakeVerifier(), max_active=2)
    assert run.rollouts == sum(e.rollouts for e in eps) == 10
    assert [e.rollouts for e in eps] == [4, 4, 2]


def test_insights_go_into_the_prompt() -> None:
    lm = FakeLM()
    solve(TASK, lm, _cfg(rollouts=3), insights=["Carry the one."], verifier=FakeVerifier())
    system = lm.calls[0][0].messages[0].content
    assert "Insights from past problems:" in system and "- Carry the one." in system


def test_token_budget_stops_search() -> None:
    outer = Budget(max_tokens=60).start()
    ep = solve(TASK, FakeLM(), _cfg(rollouts=50), budget=outer, verifier=FakeVerifier())
    assert 0 < ep.rollouts < 50
    assert outer.tokens >= 60


def test_solve_cli_table_json_and_run_dir_on_a_fake_lm(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    import json

    import insightloop.apps.runtime as runtime
    from insightloop.apps.cli.main import app
    from typer.testing import CliRunner

    monkeypatch.setattr(runtime, "make_lm", lambda cfg: FakeLM())
    runner = CliRunner()
    table = runner.invoke(app, ["solve", "--suite", "bbh/multistep_arithmetic_two", "--limit", "2",
                                "--budget", "4", "--run-dir", str(tmp_path)])
    assert table.exit_code == 0, table.output
    assert any(f"accuracy {x}%" in table.output for x in ("0.0", "50.0", "100.0"))
    assert table.output.count("bbh/multistep_arithmetic") == 2 and "mean" in table.output
    from insightloop.memory.episodes import load_episodes

    assert len(load_episodes(tmp_path)) == 2  # stored in the run directory's memory
    out = runner.invoke(app, ["solve", "--prompt", "What is 40 + 2?", "--verifier", "numeric", "--answer",
                              "42", "--json", "--strategy", "sample", "--budget", "3"])
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["rollouts"] == 3 and report["tasks"] == 1
    assert report["accuracy"] == (1.0 if report["rows"][0]["answer"] == "42" else 0.0)


# ---- closed answer sets and streaming ----------------------------------------------------------

class LabelVerifier(FakeVerifier):
    """A yes/no task's verifier that knows its closed answer set."""

    def options(self, task: Task) -> tuple[str, ...] | None:
        return ("Yes", "No")


class ScoringLM(FakeLM):
    """Writes a free answer `Maybe`; as a scorer it finds ` No` more likely than ` Yes` everywhere."""

    def __init__(self) -> None:
        super().__init__(steps=(" think", " Answer: Maybe", " look again"))
        self.scored: list[ScoreRequest] = []

    def _one(self, req: GenRequest, i: int) -> Generation:
        gen = super()._one(req, i)
        return gen if req.stop else gen.model_copy(update={"text": " carry on\n\nAnswer: Maybe\n"})

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
        self.scored += reqs
        return [Scores(logprobs=[-2.0 if c == " Yes" else -0.5 for c in r.continuations],
                       tokens=[1] * len(r.continuations), prompt_tokens=5) for r in reqs]


class StreamingFake(ScoringLM):
    """The same fake behind the streaming interface: requests complete one at a time, latest first."""

    def __init__(self) -> None:
        super().__init__()
        self.streams = 0

    @contextmanager
    def stream(self) -> Iterator[object]:
        self.streams += 1
        fake = self

        class _S:
            def __init__(self) -> None:
                self.queue: list[tuple[object, GenRequest]] = []

            def submit(self, key: object, req: GenRequest) -> None:
                self.queue.append((key, req))

            def wait(self) -> list[tuple[object, list[Generation]]]:
                if not self.queue:
                    return []
                key, req = self.queue.pop()
                return [(key, fake.generate([req])[0])]

        yield _S()


YESNO = Task(id="q", family="yn", prompt="Is 42 even?", answer="Yes", verifier="boolean")


@pytest.mark.parametrize("strategy", ["mcts", "sample"])
def test_choose_mode_replaces_free_answers_by_the_likeliest_option(strategy: str) -> None:
    lm = ScoringLM()
    ep = solve(YESNO, lm, _cfg(strategy=strategy, rollouts=4), verifier=LabelVerifier())
    assert lm.scored and all(r.continuations == (" Yes", " No") for r in lm.scored)
    assert {t.parsed_answer for t in ep.trajectories} == {"No"}
    assert all(t.text.endswith("Answer: No") for t in ep.trajectories)
    assert all(r.assistant_prefix.endswith("Answer:") for r in lm.scored)
    free = solve(YESNO, ScoringLM(), _cfg(strategy=strategy, rollouts=4, answer_mode="free"),
                 verifier=LabelVerifier())
    assert {t.parsed_answer for t in free.trajectories} == {"Maybe"}


class PriorLM(ScoringLM):
    """Prefers " No" everywhere, and far more after the content-free "N/A" than after the real problem."""

    def score(self, reqs: list[ScoreRequest]) -> list[Scores]:
        self.scored += reqs
        out = []
        for r in reqs:
            blank = r.messages[-1].content == "N/A"
            no = -0.1 if blank else -0.5
            out.append(Scores(logprobs=[-2.0 if c == " Yes" else no for c in r.continuations],
                              tokens=[1] * len(r.continuations), prompt_tokens=5))
        return out


@pytest.mark.parametrize("strategy", ["mcts", "sample"])
def test_calibration_divides_out_the_content_free_prior(strategy: str) -> None:
    lm = PriorLM()
    ep = solve(YESNO, lm, _cfg(strategy=strategy, rollouts=4, calibrate=True), verifier=LabelVerifier())
    blank = [r for r in lm.scored if r.messages[-1].content == "N/A"]
    assert len(blank) == 1 and blank[0].assistant_prefix == "Answer:"  # the prior is scored once per task
    # calibrated: Yes -2.0 - (-2.0) = 0 beats No -0.5 - (-0.1) = -0.4
    assert {t.parsed_answer for t in ep.trajectories} == {"Yes"}
    plain = solve(YESNO, PriorLM(), _cfg(strategy=strategy, rollouts=4), verifier=LabelVerifier())
    assert {t.parsed_answer for t in plain.trajectories} == {"No"}


def test_choose_mode_needs_a_scorer_and_a_closed_set() -> None:
    plain = solve(YESNO, FakeLM(), _cfg(strategy="sample", rollouts=2), verifier=LabelVerifier())
    assert all("Answer: 4" in t.text for t in plain.trajectories)  # no scorer: free answers stand
    lm = ScoringLM()
    solve(TASK, lm, _cfg(strategy="sample", rollouts=2), verifier=FakeVerifier())
    assert lm.scored == []  # an open answer set is never scored


def test_streaming_driver_gives_the_lockstep_results() -> None:
    tasks = [YESNO.model_copy(update={"id": f"q{i}"}) for i in range(5)]
    streamed_lm = StreamingFake()
    streamed = solve_many(tasks, streamed_lm, _cfg(rollouts=5), verifier=LabelVerifier(), max_active=3)
    stepped = solve_many(tasks, ScoringLM(), _cfg(rollouts=5), verifier=LabelVerifier(), max_active=3)
    assert streamed_lm.streams == 1
    assert [e.task.id for e in streamed] == [t.id for t in tasks]
    for a, b in zip(streamed, stepped, strict=True):
        assert [n.step_text for n in a.tree.nodes] == [n.step_text for n in b.tree.nodes]
        assert a.rollouts == b.rollouts == 5 and a.answer == b.answer == "No"
