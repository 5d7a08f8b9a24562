"""Answer extraction and the verifier for every task family, one family per module.

- `extract`: finding the final answer in a completion (the `Answer:` line, `\\boxed{}`, ...).
- `base`: the shared flow (extract, bound the size, check) every verifier follows.
- `labels`: exact text, multiple-choice letters, yes/no words.
- `numeric`: exact numbers (fractions, exponents; non-finite values refused).
- `symbolic`: mathematical equivalence through math-verify, behind a guard against slow inputs.
- `arithmetic`: Game of 24 / Countdown through a whitelisting `ast` evaluator with exact fractions.
- `equation`: equation balancing with the same evaluator.
- `rg`: reasoning-gym tasks, scored by the dataset's own scorer.
- `instructions`: the answer-format line that ends every prompt.
- `registry`: the verifier behind each name, and the names.

Verifiers never execute model text. `verify(task, completion)` is the entry point;
`get_verifier(name)` returns the `Verifier` behind a task's `verifier` field.
"""

from insightloop.evals.verifiers.arithmetic import (
    MAX_EXPR_CHARS,
    MAX_PUZZLE_INT,
    ArithmeticPuzzleVerifier,
    ExpressionError,
    eval_arithmetic,
    puzzle_spec,
)
from insightloop.evals.verifiers.base import MAX_ANSWER_CHARS, BaseVerifier
from insightloop.evals.verifiers.equation import EquationVerifier
from insightloop.evals.verifiers.extract import MAX_COMPLETION_CHARS, clean_answer, extract_answer
from insightloop.evals.verifiers.instructions import answer_instruction
from insightloop.evals.verifiers.labels import (
    BOOLEAN_WORDS,
    BooleanVerifier,
    ChoiceVerifier,
    ExactVerifier,
    boolean_labels,
    normalize,
    parse_boolean,
    parse_choice,
    parse_options,
    texts_match,
)
from insightloop.evals.verifiers.numeric import MAX_NUMBER_CHARS, NumericVerifier, parse_number
from insightloop.evals.verifiers.registry import TASK_FILE_VERIFIERS, VERIFIER_NAMES, get_verifier, verify
from insightloop.evals.verifiers.rg import ReasoningGymVerifier, rg_dataset
from insightloop.evals.verifiers.symbolic import MATH_TIMEOUT_S, MAX_MATH_NESTING, MathVerifier, math_guard

__all__ = [
    "BOOLEAN_WORDS", "MATH_TIMEOUT_S", "MAX_ANSWER_CHARS", "MAX_COMPLETION_CHARS", "MAX_EXPR_CHARS",
    "MAX_MATH_NESTING", "MAX_NUMBER_CHARS", "MAX_PUZZLE_INT", "TASK_FILE_VERIFIERS", "VERIFIER_NAMES",
    "ArithmeticPuzzleVerifier", "BaseVerifier", "BooleanVerifier", "ChoiceVerifier", "EquationVerifier",
    "ExactVerifier", "ExpressionError", "MathVerifier", "NumericVerifier", "ReasoningGymVerifier",
    "answer_instruction", "boolean_labels", "clean_answer", "eval_arithmetic", "extract_answer",
    "get_verifier", "math_guard", "normalize", "parse_boolean", "parse_choice", "parse_number",
    "parse_options", "puzzle_spec", "rg_dataset", "texts_match", "verify",
]
