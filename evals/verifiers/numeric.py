"""Numeric answers: the last number in the answer, read exactly, equal to the reference.

A number may have thousands separators, a sign (ASCII or U+2212), a decimal part, an exponent
(`1e3`, `2.5E-4`), a `/denominator`, or be written `\\frac{a}{b}`; `$` and `%` are ignored. Reading is
exact (`Fraction`, the exponent applied as a power of ten, never through a float), so 0.1 + 0.2 is
3/10 and `1e3` is 1000. A value a float cannot hold (`1e309`, `inf`, `nan`, `∞`) is refused with a
reason: it is not a number the task could mean, and reading its digits alone would misread it.
"""

from __future__ import annotations

import re
import sys
from fractions import Fraction

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.base import BaseVerifier

MAX_NUMBER_CHARS = 40
MAX_EXPONENT = 400  # past the float range either way (about 1e-308 to 1.8e308): refused before 10**e is built
RELATIVE_TOLERANCE = Fraction(1, 10**9)

_EXP = r"(?:[eE][-+−]?\d+)?"
_NUMBER_RE = re.compile(
    rf"[-+−]?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?{_EXP}(?:\s*/\s*\d+)?|[-+−]?\.\d+{_EXP}"
    r"|[-+−]?(?:∞|\b(?i:inf(?:inity)?|infty|nan)\b)"
)
_TOKEN_RE = re.compile(r"(?P<num>[-+]?(?:\d+(?:\.\d+)?|\.\d+))(?:[eE](?P<exp>[-+]?\d+))?(?P<den>\s*/\s*\d+)?")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_NON_FINITE = ("∞", "inf", "infinity", "infty", "nan")
_FLOAT_MAX = Fraction(sys.float_info.max)


def _exact(token: str) -> Fraction:
    """A cleaned number token as an exact fraction. Raises ValueError when it is not a finite number."""
    if token.lstrip("+-").lower() in _NON_FINITE:
        raise ValueError(f"{token} is not a finite number")
    match = _TOKEN_RE.fullmatch(token)
    if match is None:
        raise ValueError(f"not a number: {token!r}")
    exponent = int(match["exp"] or 0)
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"{token} is out of range: the exponent must be within ±{MAX_EXPONENT}")
    value = Fraction(match["num"] + (match["den"] or "")) * Fraction(10) ** exponent
    if abs(value) > _FLOAT_MAX:
        raise ValueError(f"{token} is not a finite number (too large for a float)")
    return value


def parse_number(text: str) -> Fraction:
    """The last number in `text` as an exact fraction (commas, `$`, `%`, exponents, `a/b` and
    `\\frac{a}{b}` allowed). Raises ValueError when there is none, it is too long or not finite."""
    text = _FRAC_RE.sub(r"\1/\2", text.replace("$", "").replace("−", "-"))
    found = _NUMBER_RE.findall(text)
    if not found:
        raise ValueError("no number in the answer")
    token = found[-1].replace(",", "").replace(" ", "").replace("−", "-")
    if len(token) > MAX_NUMBER_CHARS:
        raise ValueError(f"number too long (over {MAX_NUMBER_CHARS} characters)")
    try:
        return _exact(token)
    except ZeroDivisionError as exc:
        raise ValueError("division by zero in the answer") from exc


class NumericVerifier(BaseVerifier):
    """The last number in the answer equals the reference exactly (or within 1e-9 relative)."""

    def check(self, task: Task, answer: str) -> Reward:
        ref = parse_number(self.reference(task))
        try:
            value = parse_number(answer)
        except ValueError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        close = value == ref or abs(value - ref) <= RELATIVE_TOLERANCE * max(1, abs(ref))
        return Reward(score=float(close), parsed_answer=str(value))
