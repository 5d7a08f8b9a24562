"""What memory puts into a solver's prompt: rules and worked examples.

A `Hint` is a memory item as the solver sees it. A rule is one line of guidance, listed in the
system message. A worked example is a problem with a verified solution ending in its answer line,
shown as an earlier user/assistant exchange before the task (few-shot demonstrations act mostly
through the answer format and label space, which is what a small model most needs).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

HintKind = Literal["rule", "example"]


class Hint(BaseModel):
    """A rule (`text` is the guidance) or a worked example (`text` the problem, `solution` its answer)."""

    model_config = ConfigDict(frozen=True)
    kind: HintKind = "rule"
    text: str = Field(min_length=1)
    solution: str = ""

    @classmethod
    def of(cls, item: str | Hint) -> Hint:
        """A plain string is a rule."""
        return item if isinstance(item, Hint) else cls(text=item)

    @property
    def prompt_chars(self) -> int:
        return len(self.text) + len(self.solution)
