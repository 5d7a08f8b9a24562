"""The flow every verifier shares: extract the final answer, bound its size, then check it.

A subclass sets `choice` (lone option letters count as answers) or overrides `extract`, and
implements `check(task, answer)`. Bad model output never raises: it scores 0 with `error` set. A
task without a reference answer does raise, since that is a fault of the task, not of the model.
"""

from __future__ import annotations

from insightloop.core.task import Reward, Task
from insightloop.evals.verifiers.extract import extract_answer

MAX_ANSWER_CHARS = 1_000
NO_ANSWER = 'no final answer found (expected a line "Answer: ...")'


class BaseVerifier:
    """Shared flow: extract the answer, bound its size, then `check` it against the task."""

    choice = False

    def extract(self, task: Task, completion: str) -> str | None:
        return extract_answer(completion, choice=self.choice)

    def verify(self, task: Task, completion: str) -> Reward:
        answer = self.extract(task, completion)
        if answer is None:
            return Reward(score=0.0, error=NO_ANSWER)
        if len(answer) > MAX_ANSWER_CHARS:
            return Reward(score=0.0, parsed_answer=answer[:80], error="answer too long")
        return self.check(task, answer)

    def check(self, task: Task, answer: str) -> Reward:
        raise NotImplementedError

    @staticmethod
    def reference(task: Task) -> str:
        """The task's reference answer; a task without one cannot be verified at all."""
        if task.answer is None:
            raise ValueError(f"task {task.id!r} has no reference answer to verify against")
        return task.answer
