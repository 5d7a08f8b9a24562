"""Math answers checked for equivalence by math-verify (`\\frac{1}{2}` equals 0.5).

math-verify parses LaTeX and plain expressions symbolically, which an adversarial answer can make
arbitrarily slow (exponent towers, huge powers, factorials, deep nesting), so `math_guard` refuses
those before anything is parsed, and the parse runs under math-verify's own timeout.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.base import BaseVerifier

MATH_TIMEOUT_S = 5
MAX_MATH_NESTING = 8  # the LaTeX grammar slows down with depth; real answers stay shallow

# A power whose exponent holds another power (9^{9^9}, 9^9^9) or has four or more digits.
_EXPONENT_RE = re.compile(r"\^\s*\{[^}]*\^|\^\s*\{?\s*[\w.]+\s*\}?\s*\^|\^\s*\{?\s*-?\d{4,}")


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def math_guard(answer: str) -> str | None:
    """Why `answer` is unsafe to hand to a symbolic parser (exponent towers, huge powers), or None."""
    if "**" in answer:
        return "'**' is not allowed; write powers as ^"
    if _EXPONENT_RE.search(answer):
        return "nested or huge exponents are not allowed"
    if re.search(r"\d{60,}", answer):
        return "number too long"
    if "!" in answer:
        return "factorials are not allowed"
    if _nesting_depth(answer) > MAX_MATH_NESTING:
        return f"brackets nested deeper than {MAX_MATH_NESTING}"
    return None


def _math_parse(text: str, timeout: int | None) -> list[Any]:
    from math_verify import parse

    # Bare LaTeX (x^{2}, \frac..) is only read inside math delimiters; plain text reads better bare.
    forms = [f"${text}$", text] if "$" not in text and any(c in text for c in "\\^{") else [text, f"${text}$"]
    for form in forms:
        parsed = parse(form, parsing_timeout=timeout)
        if parsed:
            return parsed
    return []


class MathVerifier(BaseVerifier):
    """Mathematical equivalence through math-verify (the reference parsed the same way)."""

    def check(self, task: Task, answer: str) -> Reward:
        from math_verify import verify

        problem = math_guard(answer)
        if problem:
            return Reward(score=0.0, parsed_answer=answer, error=problem)
        # math-verify's timeout uses SIGALRM, which only the main thread may set.
        timeout = MATH_TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
        gold = _math_parse(self.reference(task), timeout)
        pred = _math_parse(answer, timeout)
        if not pred:
            return Reward(score=0.0, parsed_answer=answer, error="math-verify could not parse the answer")
        ok = verify(gold, pred, timeout_seconds=timeout)
        return Reward(score=float(ok), parsed_answer=str(pred[-1]))
