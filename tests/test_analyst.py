"""The analyst on scripted LMs: schema validation and retry, the line fallback, leaks, synthesis."""

from __future__ import annotations

import json

import pytest
from insightloop.agent.learn.analyst import (
    Analysis,
    Analyst,
    AnalystFormatError,
    parse_json,
    parse_lines,
    render_pair,
)
from insightloop.agent.learn.leaks import leak_reason
from insightloop.agent.learn.pairs import make_pair
from insightloop.agent.learn.synthesis import synthesize
from insightloop.core.budget import Budget
from insightloop.core.episode import Trajectory
from insightloop.core.lm import Generation, GenRequest
from insightloop.core.task import Reward, Task

TASK = Task(id="t1", family="arith", prompt="What is 17 + 25? Add the two numbers.", answer="42",
            verifier="numeric")
GOOD = {"divergence_step": 2, "step_critique": "the tens were not carried", "strategic_pivot": "carry",
        "success_pattern": "add ones then tens", "failure_mode": "dropping the carry",
        "insights": [{"text": "When adding two-digit numbers, carry the tens digit.", "kind": "pitfall"}]}


class ScriptedLM:
    """Replies with the scripted texts in order, and records every request."""

    name = "scripted"

    def __init__(self, replies: list[str]):
        self.replies = list(replies)
        self.requests: list[GenRequest] = []

    def generate(self, reqs: list[GenRequest]) -> list[list[Generation]]:
        self.requests += reqs
        return [[Generation(text=self.replies.pop(0), prompt_tokens=10, completion_tokens=5)] for _ in reqs]


def _pair():  # noqa: ANN202
    good = Trajectory(text="Step 1: 7+5=12, carry 1\nStep 2: 1+2+1=4\nAnswer: 42", reward=1.0)
    bad = Trajectory(text="Step 1: 7+5=12, carry 1\nStep 2: 1+2=3\nAnswer: 32", reward=0.0)
    return make_pair("hard", good, bad)


def test_render_pair_names_the_verdicts_and_the_split() -> None:
    text = render_pair(TASK, _pair())
    assert "ACCEPTED attempt" in text and "REJECTED attempt" in text and "differ at line 2" in text


def test_parse_json_accepts_the_schema_and_explains_errors() -> None:
    a = parse_json("Sure! " + json.dumps(GOOD) + " done")
    assert a.divergence_step == 2 and a.insights[0].kind == "pitfall"
    with pytest.raises(AnalystFormatError, match="insights"):
        parse_json(json.dumps({**GOOD, "insights": []}))
    with pytest.raises(AnalystFormatError, match="invalid JSON"):
        parse_json('{"divergence_step": 2,')
    with pytest.raises(AnalystFormatError, match="no JSON"):
        parse_json("I think the tens were dropped.")


def test_json_retry_feeds_the_validation_error_back() -> None:
    lm = ScriptedLM(['{"divergence_step": 2}', json.dumps(GOOD)])
    budget = Budget().start()
    a = Analyst(lm, "json", retries=2).analyze(TASK, _pair(), budget)
    assert isinstance(a, Analysis) and a.insights[0].text.startswith("When adding")
    assert len(lm.requests) == 2
    second = lm.requests[1].messages
    assert second[-2].role == "assistant" and second[-2].content == '{"divergence_step": 2}'
    assert "invalid" in second[-1].content and "insights" in second[-1].content
    assert budget.rollouts == 0 and budget.prompt_tokens == 20  # analysis costs tokens, not rollouts


def test_json_retries_are_bounded() -> None:
    lm = ScriptedLM(["nope"] * 5)
    analyst = Analyst(lm, "json", retries=1)
    assert analyst.analyze(TASK, _pair(), Budget().start()) is None
    assert len(lm.requests) == 2 and analyst.errors


def test_auto_falls_back_to_lines_after_json_fails() -> None:
    lm = ScriptedLM(["not json", " dropped the tens.", " carried.",
                     " adding two-digit numbers, carry the tens."])
    a = Analyst(lm, "auto", retries=0).analyze(TASK, _pair(), Budget().start())
    assert a is not None and a.step_critique == "At line 2, the rejected attempt dropped the tens."
    assert a.strategic_pivot == "The accepted attempt carried."
    assert [i.text for i in a.insights] == ["When adding two-digit numbers, carry the tens."]


def test_lines_prefill_every_field_so_the_model_only_writes_content() -> None:
    lm = ScriptedLM([" dropped the carry", " kept the carry\nmore", " adding numbers, always carry the one."])
    analyses = Analyst(lm, "lines").analyze_many(TASK, [_pair()], Budget().start())
    assert analyses[0] is not None
    assert analyses[0].insights[0].text == "When adding numbers, always carry the one."
    prefixes = [r.assistant_prefix for r in lm.requests]
    assert prefixes[0] == "STEP: At line 2, the rejected attempt"
    assert prefixes[1].endswith("\nPIVOT: The accepted attempt") and prefixes[1].startswith(prefixes[0])
    assert prefixes[2].endswith("kept the carry\nINSIGHT: When")
    assert all(r.stop == ("\n",) for r in lm.requests)


def test_lines_batch_all_pairs_per_field_and_unusable_output_gives_none() -> None:
    lm = ScriptedLM([" a", " b", " c", " d", " adding, carry the tens digit.", " ok"])
    out = Analyst(lm, "lines").analyze_many(TASK, [_pair(), _pair()], Budget().start())
    assert out[0] is not None and out[1] is None  # 'When ok' is too short to be an insight
    assert len(lm.requests) == 6  # three fields, each one batched call for both pairs


def test_template_placeholders_are_not_insights() -> None:
    with pytest.raises(AnalystFormatError):
        parse_lines("INSIGHT: When <kind of problem>, <do this / avoid that>.")


def test_parse_lines_drops_invalid_insights() -> None:
    a = parse_lines("STEP: a\nINSIGHT: too short\n- INSIGHT: When subtracting, borrow from the next digit.")
    assert [i.text for i in a.insights] == ["When subtracting, borrow from the next digit."]
    with pytest.raises(AnalystFormatError):
        parse_lines("STEP: only a critique")


@pytest.mark.parametrize(("text", "task", "leaks"), [
    ("When adding, the result is 42.", TASK, "answer"),
    ("When adding two-digit numbers, carry the tens digit.", TASK, None),
    ("When asked what is 17 + 25 add the two numbers", TASK, "copies"),
    ("When you see 17 and 25, add them carefully.", TASK, "numbers"),
    ("When an expression has not, True flips to False.", Task(id="b", family="b", prompt="not True",
                                                            answer="False"), None),
    ("When unsure, the answer is False.", Task(id="b", family="b", prompt="not True", answer="False"),
     "answer"),
    ("When options are listed, pick (B) first.", Task(id="c", family="c", prompt="Pick one", answer="(B)"),
     "answer"),
])
def test_leak_reason(text: str, task: Task, leaks: str | None) -> None:
    reason = leak_reason(text, task)
    assert (reason is None) if leaks is None else (reason is not None and leaks in reason)


def _verify(task: Task, text: str) -> Reward:
    ok = text.rstrip().endswith("Answer: 42")
    return Reward(score=float(ok), parsed_answer="42" if ok else None)


def test_synthesis_is_verified_counted_and_free_of_meta_language() -> None:
    analysis = Analysis.model_validate(GOOD)
    lm = ScriptedLM([" 7+5=12, carry 1.\nStep 2: 1+2+1=4.\nAnswer: 42\nextra",
                     " per the insight, 42\nAnswer: 42", " 1+2=3\nAnswer: 32"])
    budget = Budget(max_rollouts=3).start()
    chain = synthesize(TASK, analysis, lm, _verify, budget)
    assert chain is not None and chain.verified and chain.text.endswith("Answer: 42")
    assert chain.text.startswith("Step 1:") and "extra" not in chain.text
    assert "carry the tens digit" in lm.requests[0].messages[0].content  # the guidance is in the prompt
    meta = synthesize(TASK, analysis, lm, _verify, budget)
    assert meta is not None and not meta.verified  # correct, but it talks about the guidance
    wrong = synthesize(TASK, analysis, lm, _verify, budget)
    assert wrong is not None and not wrong.verified
    assert budget.rollouts == 3
    assert synthesize(TASK, analysis, lm, _verify, budget) is None  # the budget is spent: no call
