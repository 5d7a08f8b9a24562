"""Equation balancing: the given numbers in the given order, operators filled in, no parentheses.

The filled-in equation is evaluated with the safe exact evaluator of `arithmetic` under the usual
precedence; any filling that reaches the target counts, not only the reference one.
"""

from __future__ import annotations

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.arithmetic import ExpressionError, eval_arithmetic, puzzle_spec
from insightloop.evals.verifiers.base import BaseVerifier


class EquationVerifier(BaseVerifier):
    """Equation balancer: the given numbers in the given order, operators filled in, no parentheses,
    evaluating exactly to the target under the usual precedence."""

    def check(self, task: Task, answer: str) -> Reward:
        numbers, target = puzzle_spec(task)
        if "(" in answer or ")" in answer:
            return Reward(score=0.0, parsed_answer=answer, error="parentheses are not allowed")
        try:
            value, used = eval_arithmetic(answer)
        except ExpressionError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        if used != numbers:
            return Reward(score=0.0, parsed_answer=answer,
                          error=f"the numbers must be {numbers} in this order (got {used})")
        return Reward(score=float(value == target), parsed_answer=answer)
