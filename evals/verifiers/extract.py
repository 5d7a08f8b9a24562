"""Finding the final answer in a completion, shared by every verifier.

The order is fixed: the last `Answer:` line (or the block of lines under a bare `Answer:`), then the
last `\\boxed{...}`, then the last "the answer is X"; choice tasks also accept a lone option letter
on a line of its own. Only the tail of a completion is searched: the final answer sits at the end,
and that bounds the regex work on adversarially long text.
"""

from __future__ import annotations

import re

MAX_COMPLETION_CHARS = 20_000
WRAPPERS = "*_`'\" \t"
"""Markdown and quote characters stripped from both ends of an answer."""

_ANSWER_RE = re.compile(r"\banswer\s*\**\s*[:：]", re.IGNORECASE)
_THE_ANSWER_RE = re.compile(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\b\s*:?\s*([^\n]*)", re.IGNORECASE)
_LONE_LETTER_RE = re.compile(r"^[ \t*]*\(?([A-Z])\)?[ \t.*]*$", re.MULTILINE)


def clean_answer(answer: str) -> str:
    """`answer` without outer whitespace, quotes and markdown, and without one sentence-ending period."""
    answer = answer.strip().strip(WRAPPERS).strip()
    # One trailing period ends a sentence; an ellipsis is content.
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].rstrip()
    return answer.strip(WRAPPERS).strip()


def _after_answer_marker(text: str, raw: bool = False) -> str | None:
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    if raw:
        # Grids and move lists span lines and their spacing and punctuation are content.
        return rest.strip() or None
    line, _, below = rest.partition("\n")
    if clean_answer(line):
        return clean_answer(line)
    # "Answer:" alone on its line: the answer is the block of lines under it.
    block: list[str] = []
    for row in below.lstrip("\n").split("\n"):
        if not row.strip():
            break
        block.append(row.rstrip())
    return clean_answer("\n".join(block)) or None


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return clean_answer(text[i:j - 1]) if depth == 0 else None


def extract_answer(completion: str, choice: bool = False, raw: bool = False) -> str | None:
    """The final answer in `completion`, or None. See the module docstring for the order.
    `raw` keeps everything after the last `Answer:` marker (all lines, only outer whitespace trimmed)."""
    text = completion[-MAX_COMPLETION_CHARS:]
    for found in (_after_answer_marker(text, raw), _last_boxed(text)):
        if found:
            return found
    said = [m.group(1) for m in _THE_ANSWER_RE.finditer(text)]
    if said and clean_answer(said[-1]):
        return clean_answer(said[-1])
    if choice:
        letters = _LONE_LETTER_RE.findall(text)
        if letters:
            return f"({letters[-1]})"
    return None
