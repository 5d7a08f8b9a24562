"""Label answers: free text matched exactly, multiple-choice letters and yes/no (boolean) words.

Text is compared after normalization (Unicode width, case, whitespace, outer quotes and markdown);
an option may be named by its letter in any usual form or by its text; a boolean answer may use any
of the yes/no, true/false or valid/invalid words, a leading `not` flipping it.
"""

from __future__ import annotations

import re
import unicodedata

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.base import BaseVerifier
from insightloop.evals.verifiers.extract import WRAPPERS, clean_answer

BOOLEAN_WORDS = {"true": True, "yes": True, "valid": True, "correct": True,
                 "false": False, "no": False, "invalid": False, "incorrect": False}

_SOFT_PUNCT = str.maketrans({c: " " for c in ",;:!?\"'`*"})
_LETTER_PATTERNS = (re.compile(r"^\(?([A-Za-z])\)"), re.compile(r"^([A-Z])(?:[.:]|$)"),
                    re.compile(r"^(?:option|choice)\s+\(?([A-Za-z])\)?\b", re.IGNORECASE))
_OPTION_RE = re.compile(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", re.MULTILINE)


def normalize(text: str) -> str:
    """Case-, width- and whitespace-insensitive form with outer quotes/markdown and a final period removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(clean_answer(text).split())


def _loose(text: str) -> str:
    return " ".join(normalize(text).translate(_SOFT_PUNCT).split())


def texts_match(answer: str, reference: str) -> bool:
    """Equal after normalization, or after dropping soft punctuation (commas, quotes, colons...).
    A reference with no letters or digits (e.g. `) ] >`) is compared ignoring spaces."""
    if normalize(answer) == normalize(reference) or _loose(answer) == _loose(reference) != "":
        return True
    if not any(ch.isalnum() for ch in reference):
        return "".join(answer.split()) == "".join(reference.split())
    return False


def parse_boolean(text: str) -> bool:
    """True/False from yes/no, true/false, valid/invalid words (a leading `not` flips). Raises ValueError."""
    words = normalize(text).translate(_SOFT_PUNCT).replace(".", " ").split()
    for i, word in enumerate(words):
        if word in BOOLEAN_WORDS:
            value = BOOLEAN_WORDS[word]
            return not value if i > 0 and words[i - 1] == "not" else value
    raise ValueError(f"not a yes/no answer; expected one of {sorted(BOOLEAN_WORDS)}")


def parse_choice(text: str, options: dict[str, str] | None = None) -> str:
    """The option letter an answer names: `(A)`, `A`, `A)`, `Option A`, `(A) text`, or an option's text.
    Raises ValueError when none (or a letter outside `options`) is named."""
    text = text.strip().strip(WRAPPERS)
    letter = next((m.group(1).upper() for p in _LETTER_PATTERNS if (m := p.match(text))), None)
    if letter is None:
        inner = set(re.findall(r"\(([A-Z])\)", text))
        letter = inner.pop() if len(inner) == 1 else None
    if letter is None and options:
        letter = next((k for k, v in options.items() if texts_match(text, v)), None)
    if letter is None:
        raise ValueError("no option letter like (A) in the answer")
    if options and letter not in options:
        raise ValueError(f"option ({letter}) does not exist; options are {', '.join(sorted(options))}")
    return letter


def parse_options(prompt: str) -> dict[str, str]:
    """Multiple-choice options written as lines `(A) text` in a prompt, as {letter: text}."""
    return {letter: text for letter, text in _OPTION_RE.findall(prompt)}


def boolean_labels(reference: str) -> tuple[str, str]:
    """The (positive, negative) words a boolean task answers with, in the reference's own vocabulary."""
    word = normalize(reference)
    if word in ("yes", "no"):
        return ("Yes", "No")
    if word in ("valid", "invalid"):
        return ("valid", "invalid")
    return ("True", "False")


class ExactVerifier(BaseVerifier):
    """Text equal to the reference after normalization (see `texts_match`)."""

    def check(self, task: Task, answer: str) -> Reward:
        return Reward(score=float(texts_match(answer, self.reference(task))), parsed_answer=answer)


class ChoiceVerifier(BaseVerifier):
    """The option letter named by the answer equals the reference letter."""

    choice = True

    def check(self, task: Task, answer: str) -> Reward:
        options = task.meta.get("options")
        ref = parse_choice(self.reference(task))
        try:
            letter = parse_choice(answer, options)
        except ValueError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        return Reward(score=float(letter == ref), parsed_answer=f"({letter})")

    def options(self, task: Task) -> tuple[str, ...] | None:
        """The option letters, written `(A)`, when the task lists its options."""
        letters = sorted(task.meta.get("options") or {})
        return tuple(f"({x})" for x in letters) or None


class BooleanVerifier(BaseVerifier):
    """Yes/no, true/false, valid/invalid: same polarity as the reference."""

    def check(self, task: Task, answer: str) -> Reward:
        ref = parse_boolean(self.reference(task))
        try:
            value = parse_boolean(answer)
        except ValueError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        return Reward(score=float(value == ref), parsed_answer=str(value))

    def options(self, task: Task) -> tuple[str, ...] | None:
        """The task's two labels, in its own vocabulary (`meta["labels"]`, else the reference's)."""
        labels = task.meta.get("labels")
        if labels:
            return tuple(labels)
        return boolean_labels(task.answer) if task.answer is not None else None
