"""Leak checks: a candidate rule must not state its source problem's answer or copy its text.

A rule learned on a training problem is shown to other problems; one that quotes the answer or the
problem itself teaches nothing general (and would inflate its own admission test).
"""

from __future__ import annotations

from insightloop.core.task import Task

GENERIC_ANSWERS = {"true", "false", "yes", "no", "valid", "invalid"}


def _words(text: str) -> list[str]:
    return "".join(c.lower() if c.isalnum() else " " for c in text).split()


def _ngrams(words: list[str], n: int) -> set[tuple[str, ...]]:
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def _contains_phrase(hay: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(hay[i:i + n] == needle for i in range(len(hay) - n + 1))


def _leaks_answer(words: list[str], answer: str) -> bool:
    ans = _words(answer)
    if not ans:
        return False
    if " ".join(ans) in GENERIC_ANSWERS:
        # 'true', 'no' ... are ordinary words in a general rule; only a stated verdict leaks.
        return any(_contains_phrase(words, [w, *ans]) for w in ("answer", "is", "be"))
    return _contains_phrase(words, ans)


def leak_reason(text: str, task: Task, copy_ngram: int = 4, copy_fraction: float = 0.5) -> str | None:
    """Why an insight must be rejected for its source task (answer leak, copied text), or None."""
    words, prompt = _words(text), _words(task.prompt)
    if task.answer and _leaks_answer(words, task.answer):
        return "leaks the source problem's answer"
    grams = _ngrams(words, copy_ngram)
    if grams and len(grams & _ngrams(prompt, copy_ngram)) / len(grams) >= copy_fraction:
        return "copies the source problem's text"
    if _ngrams(words, 8) & _ngrams(prompt, 8):
        return "copies the source problem's text"
    numbers = {w for w in words if w.isdigit()} & {w for w in prompt if w.isdigit()}
    if len(numbers) >= 2:
        return "quotes the source problem's numbers: not general"
    return None
