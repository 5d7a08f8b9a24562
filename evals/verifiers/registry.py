"""The verifier behind each name a task's `verifier` field may hold; the one list of those names.

`VERIFIER_NAMES` is every registered name; `TASK_FILE_VERIFIERS` the ones a user's JSONL task file
may name (a prompt and a reference answer are all such a verifier needs).
"""

from __future__ import annotations

from insightloop.core.task import Reward, Task, Verifier
from insightloop.evals.verifiers.arithmetic import ArithmeticPuzzleVerifier
from insightloop.evals.verifiers.equation import EquationVerifier
from insightloop.evals.verifiers.labels import BooleanVerifier, ChoiceVerifier, ExactVerifier
from insightloop.evals.verifiers.numeric import NumericVerifier
from insightloop.evals.verifiers.rg import ReasoningGymVerifier
from insightloop.evals.verifiers.symbolic import MathVerifier

_VERIFIERS: dict[str, Verifier] = {
    "exact": ExactVerifier(), "numeric": NumericVerifier(), "math": MathVerifier(),
    "choice": ChoiceVerifier(), "boolean": BooleanVerifier(),
    "game24": ArithmeticPuzzleVerifier(fixed_target=24), "countdown": ArithmeticPuzzleVerifier(),
    "equation": EquationVerifier(), "rg": ReasoningGymVerifier(),
}
VERIFIER_NAMES: tuple[str, ...] = tuple(_VERIFIERS)

# Tasks of these come from their suites: an rg task is scored against the dataset entry its generator
# stores in `meta`, and an equation prompt is laid out (numbers with `?` between) by its generator.
_SUITE_ONLY = ("equation", "rg")
TASK_FILE_VERIFIERS: tuple[str, ...] = tuple(n for n in VERIFIER_NAMES if n not in _SUITE_ONLY)


def get_verifier(name: str) -> Verifier:
    """The verifier for a task's `verifier` field. Raises ValueError naming the allowed names."""
    try:
        return _VERIFIERS[name]
    except KeyError:
        raise ValueError(f"unknown verifier {name!r}; allowed: {', '.join(VERIFIER_NAMES)}") from None


def verify(task: Task, completion: str) -> Reward:
    """Score `completion` for `task` with the task's verifier. Never raises on bad model output."""
    return get_verifier(task.verifier).verify(task, completion)
