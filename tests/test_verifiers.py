"""Verifiers and answer extraction: right, wrong, malformed and adversarial answers."""

from __future__ import annotations

import time
from fractions import Fraction

import pytest
from insightloop.core.task import Reward, Task, Verifier
from insightloop.evals.verifiers import (
    VERIFIER_NAMES,
    eval_arithmetic,
    extract_answer,
    get_verifier,
    parse_number,
    texts_match,
    verify,
)


def task(verifier: str, answer: str | None, **meta: object) -> Task:
    return Task(id="t", family="test", prompt="question", answer=answer, verifier=verifier, meta=meta)


def score(t: Task, completion: str) -> float:
    return verify(t, completion).score


# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(("completion", "expected"), [
    ("Answer: 4\nno wait\nAnswer: 5", "5"),
    ("Reasoning...\n**Answer:** (B)", "(B)"),
    ("final answer: Paris.", "Paris"),
    ("Answer:\n1 2\n3 4\n\nthanks", "1 2\n3 4"),
    ("we get \\boxed{\\frac{1}{2}} here", "\\frac{1}{2}"),
    ("So the answer is False.", "False"),
    ("Answer: 1\n\\boxed{2}", "1"),  # an Answer line beats a box
    ("nothing to see", None),
    ("Answer:   \n", None),
])
def test_extraction_order(completion: str, expected: str | None) -> None:
    assert extract_answer(completion) == expected


def test_lone_letter_only_for_choice() -> None:
    text = "Let me think.\n(C)\n"
    assert extract_answer(text) is None
    assert extract_answer(text, choice=True) == "(C)"


def test_unclosed_box_and_huge_completion_are_fast() -> None:
    start = time.perf_counter()
    assert extract_answer("\\boxed{" + "{" * 100_000) is None
    assert extract_answer("x " * 2_000_000 + "\nAnswer: 7") == "7"
    assert extract_answer("Answer: " * 200_000 + "9") == "9"
    assert time.perf_counter() - start < 2.0


def test_every_verifier_meets_the_protocol() -> None:
    for name in ("exact", "numeric", "math", "choice", "boolean", "game24", "countdown", "equation", "rg"):
        assert name in VERIFIER_NAMES
        assert isinstance(get_verifier(name), Verifier)
    with pytest.raises(ValueError, match="allowed: exact"):
        get_verifier("regex")


def test_missing_reference_is_a_systemic_error() -> None:
    with pytest.raises(ValueError, match="no reference answer"):
        verify(task("exact", None), "Answer: x")


def test_no_answer_and_overlong_answer_score_zero_with_reason() -> None:
    r = verify(task("exact", "x"), "I am not sure.")
    assert r == Reward(score=0.0, error=r.error) and "Answer:" in (r.error or "")
    r = verify(task("exact", "x"), "Answer: " + "x" * 5000)
    assert r.score == 0.0 and r.error == "answer too long"


# ---------------------------------------------------------------- exact


@pytest.mark.parametrize(("completion", "ok"), [
    ("Answer: Syndrome Therefrom", True),
    ("Answer: syndrome, therefrom.", True),
    ("Answer: `syndrome therefrom`", True),
    ("Answer: therefrom syndrome", False),
    ("Answer: syndrome", False),
])
def test_exact(completion: str, ok: bool) -> None:
    assert score(task("exact", "syndrome therefrom"), completion) == float(ok)


def test_exact_brackets_ignore_spaces_but_not_order() -> None:
    assert texts_match(")) >", ") ) >")
    assert not texts_match(") > )", ") ) >")
    assert not texts_match("", ") ) >")
    assert texts_match("dearth wind & fire", "dearth, wind, & fire")


# ---------------------------------------------------------------- numeric


@pytest.mark.parametrize(("completion", "ref", "ok"), [
    ("Answer: 1,000", "1000", True),
    ("Answer: $1,000.", "1000", True),
    ("Answer: 3/4", "0.75", True),
    ("Answer: \\frac{3}{4}", "0.75", True),
    ("Answer: -1300", "-1300", True),
    ("Answer: 8 instruments", "8", True),
    ("Answer: 2 + 6 = 8", "8", True),
    ("Answer: 9", "8", False),
    ("Answer: -8", "8", False),
])
def test_numeric(completion: str, ref: str, ok: bool) -> None:
    assert score(task("numeric", ref), completion) == float(ok)


@pytest.mark.parametrize(("completion", "error"), [
    ("Answer: eight", "no number"),
    ("Answer: " + "9" * 500, "too long"),
    ("Answer: 1/0", "division by zero"),
])
def test_numeric_malformed(completion: str, error: str) -> None:
    r = verify(task("numeric", "8"), completion)
    assert r.score == 0.0 and error in (r.error or "")


def test_parse_number_exact_fractions() -> None:
    assert parse_number("0.1") + parse_number("0.2") == parse_number("3/10")


@pytest.mark.parametrize(("text", "value"), [
    ("1e3", Fraction(1000)),
    ("2.5E-4", Fraction(1, 4000)),
    ("-1.5e2", Fraction(-150)),
    ("−1e−2", Fraction(-1, 100)),
    (".5e1", Fraction(5)),
    ("1,000e3", Fraction(10**6)),
    ("about 6.02e23 atoms", Fraction(602 * 10**21)),
    ("1e3/4", Fraction(250)),
    ("1.7e308", Fraction(17 * 10**307)),
])
def test_parse_number_reads_exponents_exactly(text: str, value: Fraction) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["1e309", "-2e308", "inf", "-Infinity", "NaN", "∞", "\\infty",
                                  "1e99999999", "1e-99999999"])
def test_parse_number_refuses_non_finite_values_quickly(text: str) -> None:
    start = time.perf_counter()
    with pytest.raises(ValueError, match="not a finite number|out of range"):
        parse_number(text)
    assert time.perf_counter() - start < 0.5


def test_numeric_reference_in_scientific_notation() -> None:
    t = task("numeric", "1e3")
    assert score(t, "Answer: 1000") == 1.0
    assert score(t, "Answer: 1e3") == 1.0
    assert score(t, "Answer: 3") == 0.0
    r = verify(task("numeric", "1000"), "Answer: 1e309")
    assert r.score == 0.0 and "not a finite number" in (r.error or "")


# ---------------------------------------------------------------- math (math-verify)


@pytest.mark.parametrize(("completion", "ok"), [
    ("Answer: 72", True),
    ("Answer: $72", True),
    ("so \\boxed{72}", True),
    ("The answer is 72.", True),
    ("Answer: 72 clips", True),
    ("Answer: 73", False),
])
def test_math(completion: str, ok: bool) -> None:
    assert score(task("math", "72"), completion) == float(ok)


def test_math_equivalent_forms() -> None:
    assert score(task("math", "\\frac{1}{2}"), "Answer: 0.5") == 1.0
    assert score(task("math", "0.5"), "Answer: $\\frac{2}{4}$") == 1.0


@pytest.mark.parametrize("answer", [
    "9**9**9", "9^{9^{9}}", "9^9^9", "2^{99999999}", "__import__('os').system('echo pwned')",
    "().__class__.__bases__[0]", "1/0", "1000000!", "(" * 300 + "1" + ")" * 300, "1" * 800,
])
def test_math_adversarial_is_safe_and_fast(answer: str) -> None:
    start = time.perf_counter()
    r = verify(task("math", "72"), f"Answer: {answer}")
    assert r.score == 0.0
    assert time.perf_counter() - start < 2.0


# ---------------------------------------------------------------- choice


OPTIONS = {"A": "The patient had a skin condition", "B": "The specialist had a skin condition",
           "C": "Ambiguous"}


@pytest.mark.parametrize(("completion", "ok"), [
    ("Answer: (B)", True),
    ("Answer: B", True),
    ("Answer: b)", True),
    ("Answer: (b)", True),
    ("Answer: (B) The specialist had a skin condition", True),
    ("Answer: I pick (B).", True),
    ("Answer: Option B", True),
    ("Answer: the specialist had a skin condition", True),
    ("Thinking...\nB\n", True),
    ("Answer: (A)", False),
    ("Answer: ambiguous", False),
])
def test_choice(completion: str, ok: bool) -> None:
    assert score(task("choice", "(B)", options=OPTIONS), completion) == float(ok)


@pytest.mark.parametrize(("completion", "error"), [
    ("Answer: (Z)", "does not exist"),
    ("Answer: no idea", "no option letter"),
])
def test_choice_malformed(completion: str, error: str) -> None:
    r = verify(task("choice", "(B)", options=OPTIONS), completion)
    assert r.score == 0.0 and error in (r.error or "")


# ---------------------------------------------------------------- boolean


@pytest.mark.parametrize(("ref", "completion", "ok"), [
    ("True", "Answer: True", True),
    ("True", "Answer: **true**.", True),
    ("False", "Answer: True", False),
    ("No", "Answer: No, he lies.", True),
    ("Yes", "Answer: no", False),
    ("invalid", "Answer: invalid", True),
    ("invalid", "Answer: The argument is not valid", True),
    ("valid", "Answer: invalid", False),
])
def test_boolean(ref: str, completion: str, ok: bool) -> None:
    assert score(task("boolean", ref), completion) == float(ok)


def test_boolean_malformed() -> None:
    r = verify(task("boolean", "True"), "Answer: maybe")
    assert r.score == 0.0 and "not a yes/no answer" in (r.error or "")


# ---------------------------------------------------------------- game24 / countdown / equation


G24 = task("game24", None, numbers=[3, 3, 8, 8], target=24)


@pytest.mark.parametrize("solution", ["8 / (3 - 8 / 3)", "8/(3-8/3) = 24", "$8 \\div (3 - 8 \\div 3)$",
                                      "8 ÷ (3 − 8 ÷ 3)"])
def test_game24_exact_fractions(solution: str) -> None:
    assert score(G24, f"Answer: {solution}") == 1.0


def test_game24_wrong_value_scores_zero_without_error() -> None:
    r = verify(G24, "Answer: 8 + 8 + 3 + 3")
    assert r.score == 0.0 and r.error is None


@pytest.mark.parametrize(("answer", "error"), [
    ("8 * 3", "exactly once"),
    ("8 * 3 + 8 - 8", "exactly once"),
    ("(8 + 8 + 8) * 3 / 3", "exactly once"),
    ("24", "exactly once"),
    ("8 / (3 - 3) + 8", "division by zero"),
    ("__import__('os').system('echo pwned')", "only integers"),
    ("(8).__class__", "only integers"),
    ("9**9**9", "only integers"),
    ("3 ** 8 - 8 * 3", "only integers"),
    ("-8 + 8 + 3 * 8 + 3 - 3", "only integers"),
    ("8.0 * 3 + 3 - 3", "only integers"),
    ("x * 3", "only integers"),
    ("99999999999999999999 * 0 + 3 * 8", "too large"),
    ("(" * 150 + "8" + ")" * 150, "too long"),
    ("8 * * 3", "not a valid expression"),
    ("lambda: 0", "only integers"),
])
def test_game24_malformed_and_adversarial(answer: str, error: str) -> None:
    start = time.perf_counter()
    r = verify(G24, f"Answer: {answer}")
    assert r.score == 0.0 and error in (r.error or ""), r
    assert time.perf_counter() - start < 1.0


def test_game24_numbers_from_a_reference_solution() -> None:
    t = task("game24", "(2 + 2) * (3 + 3)")
    assert score(t, "Answer: (3 + 3) * 2 * 2") == 1.0
    assert score(t, "Answer: 4 * 6") == 0.0


def test_countdown() -> None:
    t = task("countdown", None, numbers=[30, 100, 93], target=23)
    assert score(t, "Answer: 30 - (100 - 93)") == 1.0
    assert score(t, "Answer: 93 - 100 + 30") == 1.0
    assert score(t, "Answer: 100 - 93 + 30") == 0.0
    assert "exactly once" in (verify(t, "Answer: 30 - 7").error or "")


EQ = task("equation", "14 - 16 / 20 * 15 + 23 = 25", numbers=[14, 16, 20, 15, 23], target=25)


@pytest.mark.parametrize(("answer", "ok", "error"), [
    ("14 - 16 / 20 * 15 + 23 = 25", True, None),
    ("14 - 16 / 20 * 15 + 23", True, None),
    ("14 + 16 / 20 * 15 - 23 = 25", False, None),
    ("16 - 14 / 20 * 15 + 23 = 25", False, "in this order"),
    ("(14 - 16) / 20 * 15 + 23 = 25", False, "parentheses"),
    ("14 ** 16 / 20 * 15 + 23", False, "only integers"),
    ("14 - 16 / (20 - 20) * 15 + 23", False, "parentheses"),
])
def test_equation(answer: str, ok: bool, error: str | None) -> None:
    r = verify(EQ, f"Answer: {answer}")
    assert r.score == float(ok)
    assert (error is None and r.error is None) or (error and error in (r.error or ""))


def test_equation_any_valid_filling_counts() -> None:
    t = task("equation", "2 + 2 = 4", numbers=[2, 2], target=4)
    assert score(t, "Answer: 2 * 2 = 4") == 1.0


def test_eval_arithmetic_keeps_textual_order() -> None:
    assert eval_arithmetic("1 + 2 * 3 - 4 / 5") == (eval_arithmetic("1+2*3-4/5")[0], [1, 2, 3, 4, 5])


# ---------------------------------------------------------------- reasoning-gym


def test_reasoning_gym_scores_with_its_own_scorer() -> None:
    from insightloop.evals.suites import load_suite

    t = load_suite("rg/basic_arithmetic", limit=2, seed=3)[0]
    assert score(t, f"Answer: {t.answer}") == 1.0
    assert score(t, "Answer: 123456789123") == 0.0
    assert verify(t, "no answer here").error is not None
    again = Task.model_validate_json(t.model_dump_json())  # re-scoring after persistence
    assert score(again, f"Answer: {t.answer}") == 1.0
    stored_only = {"rg_dataset": "basic_arithmetic", "rg_entry": t.meta["rg_entry"]}
    legacy = again.model_copy(update={"meta": stored_only})
    assert score(legacy, f"Answer: {t.answer}") == 1.0
