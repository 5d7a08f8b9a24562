"""Arithmetic puzzles (Game of 24, Countdown): a safe exact evaluator and the puzzle verifier.

Model text is never executed: an answer is parsed with `ast` and walked against a whitelist
(integer literals, `+ - * /`, parentheses), computed with exact fractions. Anything else (names,
calls, attributes, powers, unary minus, floats) is refused with the reason.
"""

from __future__ import annotations

import ast
from fractions import Fraction

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.base import BaseVerifier
from insightloop.evals.verifiers.numeric import parse_number

MAX_EXPR_CHARS = 200
MAX_PUZZLE_INT = 10**12
_OPERATOR_ALIASES = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("✕", "*"),
                     ("∗", "*"), ("·", "*"), ("÷", "/"), ("−", "-"), ("–", "-"), ("$", ""),
                     ("\\left", ""), ("\\right", ""), ("\\(", ""), ("\\)", ""))


class ExpressionError(ValueError):
    """An arithmetic answer is malformed or breaks the puzzle rules; the message says why."""


def _eval_node(node: ast.AST, used: list[int]) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        if node.value > MAX_PUZZLE_INT:
            raise ExpressionError("number too large")
        used.append(node.value)
        return Fraction(node.value)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
        left, right = _eval_node(node.left, used), _eval_node(node.right, used)
        if isinstance(node.op, ast.Add):
            return left + right
        if isinstance(node.op, ast.Sub):
            return left - right
        if isinstance(node.op, ast.Mult):
            return left * right
        if right == 0:
            raise ExpressionError("division by zero")
        return left / right
    what = type(node.op).__name__ if isinstance(node, (ast.BinOp, ast.UnaryOp)) else type(node).__name__
    raise ExpressionError(f"only integers, + - * / and parentheses are allowed (found {what})")


def _pick_side(text: str) -> str:
    sides = [s for s in text.split("=") if s.strip()]
    if not sides:
        raise ExpressionError("empty expression")
    with_ops = [s for s in sides if any(op in s for op in "+-*/")]
    return (with_ops or sides)[0]


def eval_arithmetic(text: str) -> tuple[Fraction, list[int]]:
    """Exact value of an integer `+ - * /` expression and the integers it uses, in textual order.
    If the text is an equation, the side holding operators is evaluated. Raises ExpressionError."""
    for alias, op in _OPERATOR_ALIASES:
        text = text.replace(alias, op)
    if len(text) > MAX_EXPR_CHARS:
        raise ExpressionError(f"expression too long (over {MAX_EXPR_CHARS} characters)")
    expr = _pick_side(text).strip()
    try:
        tree = ast.parse(expr, mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise ExpressionError(f"not a valid expression: {expr!r}") from exc
    used: list[int] = []
    return _eval_node(tree.body, used), used


def puzzle_spec(task: Task) -> tuple[list[int], Fraction]:
    """The numbers and target of an arithmetic puzzle: from `meta` (`numbers`, `target`), else
    derived from the task's reference solution expression."""
    if "numbers" in task.meta and "target" in task.meta:
        return [int(n) for n in task.meta["numbers"]], Fraction(task.meta["target"])
    ref = BaseVerifier.reference(task)
    value, used = eval_arithmetic(ref)
    if task.verifier == "equation" and "=" in ref:
        value = parse_number(ref.rsplit("=", 1)[1])
    return used, value


class ArithmeticPuzzleVerifier(BaseVerifier):
    """Game of 24 / Countdown: each given number used exactly once with + - * /, reaching the target."""

    def __init__(self, fixed_target: int | None = None) -> None:
        self.fixed_target = fixed_target

    def check(self, task: Task, answer: str) -> Reward:
        numbers, target = puzzle_spec(task)
        if self.fixed_target is not None:
            target = Fraction(self.fixed_target)
        try:
            value, used = eval_arithmetic(answer)
        except ExpressionError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        if sorted(used) != sorted(numbers):
            return Reward(score=0.0, parsed_answer=answer,
                          error=f"must use each of {numbers} exactly once (used {used})")
        return Reward(score=float(value == target), parsed_answer=answer)
