"""Answer extraction and the verifier for every task family.

A completion's final answer is found in a fixed order: the last `Answer:` line, then the last
`\\boxed{...}`, then the last "the answer is X"; choice tasks also accept a lone option letter on a
line of its own. Verifiers never execute model text: arithmetic answers are parsed with `ast` against
a whitelist (integers, `+ - * /`, parentheses) and computed with exact fractions; math answers go
through math-verify's own parser after a guard against exponent towers.

`verify(task, completion)` is the entry point; `get_verifier(name)` returns the `Verifier` behind a
task's `verifier` field.
"""

from __future__ import annotations

import ast
import re
import threading
import unicodedata
from fractions import Fraction
from functools import lru_cache
from typing import Any

from insightloop.core.task import Reward, Task, Verifier

# Only the tail is searched: the final answer sits at the end, and this bounds regex work.
MAX_COMPLETION_CHARS = 20_000
MAX_ANSWER_CHARS = 1_000
MAX_EXPR_CHARS = 200
MAX_NUMBER_CHARS = 40
MAX_PUZZLE_INT = 10**12
MATH_TIMEOUT_S = 5
MAX_MATH_NESTING = 8  # the LaTeX grammar slows down with depth; real answers stay shallow

BOOLEAN_WORDS = {"true": True, "yes": True, "valid": True, "correct": True,
                 "false": False, "no": False, "invalid": False, "incorrect": False}

_ANSWER_RE = re.compile(r"\banswer\s*\**\s*[:：]", re.IGNORECASE)
_THE_ANSWER_RE = re.compile(r"\bthe\s+(?:final\s+|correct\s+)?answer\s+is\b\s*:?\s*([^\n]*)", re.IGNORECASE)
_LONE_LETTER_RE = re.compile(r"^[ \t*]*\(?([A-Z])\)?[ \t.*]*$", re.MULTILINE)
_NUMBER_RE = re.compile(r"[-+−]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?|[-+−]?\.\d+")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(-?\d+)\s*\}\s*\{\s*(\d+)\s*\}")
_WRAPPERS = "*_`'\" \t"
_SOFT_PUNCT = str.maketrans({c: " " for c in ",;:!?\"'`*"})
_OPERATOR_ALIASES = (("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"), ("✕", "*"),
                     ("∗", "*"), ("·", "*"), ("÷", "/"), ("−", "-"), ("–", "-"), ("$", ""),
                     ("\\left", ""), ("\\right", ""), ("\\(", ""), ("\\)", ""))


class ExpressionError(ValueError):
    """An arithmetic answer is malformed or breaks the puzzle rules; the message says why."""


# ---------------------------------------------------------------- extraction


def _clean(answer: str) -> str:
    answer = answer.strip().strip(_WRAPPERS).strip()
    # One trailing period ends a sentence; an ellipsis is content.
    if answer.endswith(".") and not answer.endswith(".."):
        answer = answer[:-1].rstrip()
    return answer.strip(_WRAPPERS).strip()


def _after_answer_marker(text: str, raw: bool = False) -> str | None:
    matches = list(_ANSWER_RE.finditer(text))
    if not matches:
        return None
    rest = text[matches[-1].end():]
    if raw:
        # Grids and move lists span lines and their spacing and punctuation are content.
        return rest.strip() or None
    line, _, below = rest.partition("\n")
    if _clean(line):
        return _clean(line)
    # "Answer:" alone on its line: the answer is the block of lines under it.
    block: list[str] = []
    for row in below.lstrip("\n").split("\n"):
        if not row.strip():
            break
        block.append(row.rstrip())
    return _clean("\n".join(block)) or None


def _last_boxed(text: str) -> str | None:
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth, j = 1, i
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return _clean(text[i:j - 1]) if depth == 0 else None


def extract_answer(completion: str, choice: bool = False, raw: bool = False) -> str | None:
    """The final answer in `completion`, or None. See the module docstring for the order.
    `raw` keeps everything after the last `Answer:` marker (all lines, only outer whitespace trimmed)."""
    text = completion[-MAX_COMPLETION_CHARS:]
    for found in (_after_answer_marker(text, raw), _last_boxed(text)):
        if found:
            return found
    said = [m.group(1) for m in _THE_ANSWER_RE.finditer(text)]
    if said and _clean(said[-1]):
        return _clean(said[-1])
    if choice:
        letters = _LONE_LETTER_RE.findall(text)
        if letters:
            return f"({letters[-1]})"
    return None


# ---------------------------------------------------------------- normalization and parsing


def normalize(text: str) -> str:
    """Case-, width- and whitespace-insensitive form with outer quotes/markdown and a final period removed."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_clean(text).split())


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


def parse_number(text: str) -> Fraction:
    """The last number in `text` as an exact fraction (commas, `$`, `%`, `a/b` and `\\frac{a}{b}` allowed).
    Raises ValueError when there is none or it is too long."""
    text = _FRAC_RE.sub(r"\1/\2", text.replace("$", "").replace("−", "-"))
    found = _NUMBER_RE.findall(text)
    if not found:
        raise ValueError("no number in the answer")
    token = found[-1].replace(",", "").replace(" ", "").replace("−", "-")
    if len(token) > MAX_NUMBER_CHARS:
        raise ValueError(f"number too long (over {MAX_NUMBER_CHARS} characters)")
    try:
        return Fraction(token)
    except ZeroDivisionError as exc:
        raise ValueError("division by zero in the answer") from exc


def parse_boolean(text: str) -> bool:
    """True/False from yes/no, true/false, valid/invalid words (a leading `not` flips). Raises ValueError."""
    words = normalize(text).translate(_SOFT_PUNCT).replace(".", " ").split()
    for i, word in enumerate(words):
        if word in BOOLEAN_WORDS:
            value = BOOLEAN_WORDS[word]
            return not value if i > 0 and words[i - 1] == "not" else value
    raise ValueError(f"not a yes/no answer; expected one of {sorted(BOOLEAN_WORDS)}")


_LETTER_PATTERNS = (re.compile(r"^\(?([A-Za-z])\)"), re.compile(r"^([A-Z])(?:[.:]|$)"),
                    re.compile(r"^(?:option|choice)\s+\(?([A-Za-z])\)?\b", re.IGNORECASE))


def parse_choice(text: str, options: dict[str, str] | None = None) -> str:
    """The option letter an answer names: `(A)`, `A`, `A)`, `Option A`, `(A) text`, or an option's text.
    Raises ValueError when none (or a letter outside `options`) is named."""
    text = text.strip().strip(_WRAPPERS)
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


# ---------------------------------------------------------------- safe exact arithmetic


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


# ---------------------------------------------------------------- verifiers


class _Base:
    """Shared flow: extract the answer, bound its size, then `check` it against the task."""

    choice = False

    def extract(self, task: Task, completion: str) -> str | None:
        return extract_answer(completion, choice=self.choice)

    def verify(self, task: Task, completion: str) -> Reward:
        answer = self.extract(task, completion)
        if answer is None:
            return Reward(score=0.0, error='no final answer found (expected a line "Answer: ...")')
        if len(answer) > MAX_ANSWER_CHARS:
            return Reward(score=0.0, parsed_answer=answer[:80], error="answer too long")
        return self.check(task, answer)

    def check(self, task: Task, answer: str) -> Reward:
        raise NotImplementedError

    @staticmethod
    def reference(task: Task) -> str:
        if task.answer is None:
            raise ValueError(f"task {task.id!r} has no reference answer to verify against")
        return task.answer


class ExactVerifier(_Base):
    """Text equal to the reference after normalization (see `texts_match`)."""

    def check(self, task: Task, answer: str) -> Reward:
        return Reward(score=float(texts_match(answer, self.reference(task))), parsed_answer=answer)


class NumericVerifier(_Base):
    """The last number in the answer equals the reference exactly (or within 1e-9 relative)."""

    def check(self, task: Task, answer: str) -> Reward:
        ref = parse_number(self.reference(task))
        try:
            value = parse_number(answer)
        except ValueError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        close = value == ref or abs(value - ref) <= Fraction(1, 10**9) * max(1, abs(ref))
        return Reward(score=float(close), parsed_answer=str(value))


class ChoiceVerifier(_Base):
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


class BooleanVerifier(_Base):
    """Yes/no, true/false, valid/invalid: same polarity as the reference."""

    def check(self, task: Task, answer: str) -> Reward:
        ref = parse_boolean(self.reference(task))
        try:
            value = parse_boolean(answer)
        except ValueError as exc:
            return Reward(score=0.0, parsed_answer=answer, error=str(exc))
        return Reward(score=float(value == ref), parsed_answer=str(value))


# A power whose exponent holds another power (9^{9^9}, 9^9^9) or has four or more digits.
_EXPONENT_RE = re.compile(r"\^\s*\{[^}]*\^|\^\s*\{?\s*[\w.]+\s*\}?\s*\^|\^\s*\{?\s*-?\d{4,}")


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


def _nesting_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in ")]}":
            depth -= 1
    return deepest


def _math_parse(text: str, timeout: int | None) -> list[Any]:
    from math_verify import parse

    # Bare LaTeX (x^{2}, \frac..) is only read inside math delimiters; plain text reads better bare.
    forms = [f"${text}$", text] if "$" not in text and any(c in text for c in "\\^{") else [text, f"${text}$"]
    for form in forms:
        parsed = parse(form, parsing_timeout=timeout)
        if parsed:
            return parsed
    return []


class MathVerifier(_Base):
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


def puzzle_spec(task: Task) -> tuple[list[int], Fraction]:
    """The numbers and target of an arithmetic puzzle: from `meta` (`numbers`, `target`), else
    derived from the task's reference solution expression."""
    if "numbers" in task.meta and "target" in task.meta:
        return [int(n) for n in task.meta["numbers"]], Fraction(task.meta["target"])
    ref = _Base.reference(task)
    value, used = eval_arithmetic(ref)
    if task.verifier == "equation" and "=" in ref:
        value = parse_number(ref.rsplit("=", 1)[1])
    return used, value


class ArithmeticPuzzleVerifier(_Base):
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


class EquationVerifier(_Base):
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


@lru_cache(maxsize=32)
def rg_dataset(name: str, size: int, seed: int) -> Any:
    """A reasoning-gym dataset; entries are generated on access, deterministically from the seed."""
    import reasoning_gym

    return reasoning_gym.create_dataset(name, size=size, seed=seed)


class ReasoningGymVerifier(_Base):
    """Scored by the reasoning-gym dataset's own `score_answer`.

    The entry is regenerated from (`rg_dataset`, `rg_size`, `rg_seed`, `rg_index`) in `meta`, since a
    JSON round-trip of the stored `rg_entry` can change types some scorers compare (tuples to lists);
    the stored entry is used when those keys are absent."""

    def extract(self, task: Task, completion: str) -> str | None:
        return extract_answer(completion, raw=True)

    def check(self, task: Task, answer: str) -> Reward:
        meta = task.meta
        if {"rg_size", "rg_seed", "rg_index"} <= meta.keys():
            data = rg_dataset(meta["rg_dataset"], meta["rg_size"], meta["rg_seed"])
            scorer, entry = data.score_answer, data[meta["rg_index"]]
        else:
            import reasoning_gym

            scorer, entry = reasoning_gym.get_score_answer_fn(meta["rg_dataset"]), meta["rg_entry"]
        try:
            score = float(scorer(answer, entry))
        except Exception as exc:  # a dataset's own scorer may choke on any model text
            return Reward(score=0.0, parsed_answer=answer, error=f"score_answer failed: {type(exc).__name__}")
        return Reward(score=min(1.0, max(0.0, score)), parsed_answer=answer)


_VERIFIERS: dict[str, Verifier] = {
    "exact": ExactVerifier(), "numeric": NumericVerifier(), "math": MathVerifier(),
    "choice": ChoiceVerifier(), "boolean": BooleanVerifier(),
    "game24": ArithmeticPuzzleVerifier(fixed_target=24), "countdown": ArithmeticPuzzleVerifier(),
    "equation": EquationVerifier(), "rg": ReasoningGymVerifier(),
}


def get_verifier(name: str) -> Verifier:
    """The verifier for a task's `verifier` field. Raises ValueError naming the allowed names."""
    try:
        return _VERIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; allowed: {', '.join(_VERIFIERS)}") from None


def verify(task: Task, completion: str) -> Reward:
    """Score `completion` for `task` with the task's verifier. Never raises on bad model output."""
    return get_verifier(task.verifier).verify(task, completion)


_OPTION_RE = re.compile(r"^\s*\(([A-Z])\)\s*(.+?)\s*$", re.MULTILINE)


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


def answer_instruction(verifier: str, labels: tuple[str, str] = ("True", "False")) -> str:
    """The answer-format line that ends every prompt, matched to how the verifier extracts answers."""
    expression = '"Answer: <expression>" using each given number exactly once with + - * / and parentheses'
    what = {
        "choice": '"Answer: (X)", where X is the letter of the correct option',
        "boolean": f'"Answer: {labels[0]}" or "Answer: {labels[1]}"',
        "numeric": '"Answer: <number>"',
        "math": '"Answer: <final answer>"',
        "game24": expression,
        "countdown": expression,
        "equation": '"Answer: <equation>", the full equation with each ? replaced by + - * or /',
        "rg": '"Answer:" followed by your final answer (a multi-line answer goes on the lines below it)',
    }.get(verifier, '"Answer: <answer>"')
    return f"Think step by step, then finish with a line {what}."
