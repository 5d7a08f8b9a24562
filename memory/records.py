"""Memory records: `Insight` (a learned memory item — a rule, or a worked example — with its measured utility),
`Attempt` (a verified correct attempt kept for contrast), and the version/diff records.

Records are pydantic models that round-trip through JSON; the store keeps them as typed columns,
never as text parsed back by pattern matching.
"""

from __future__ import annotations

import math
import time
import unicodedata
import uuid
from typing import Any, Literal

from insightloop.core.stats import interval_from_sums
from pydantic import BaseModel, Field

InsightKind = Literal["strategy", "constraint", "format", "pitfall", "example"]
InsightStatus = Literal["active", "retired", "pending"]
KINDS: tuple[str, ...] = ("strategy", "constraint", "format", "pitfall", "example")
STATUSES: tuple[str, ...] = ("active", "retired", "pending")
# An utility is reward − baseline with both in [0, 1], so every bound lives in [-1, 1].
UTILITY_RANGE = (-1.0, 1.0)


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def clean_block(text: str, max_chars: int) -> str:
    """Like `clean_text`, but keeps line breaks (a worked example's problem and solution are laid out
    in lines); runs of spaces within a line collapse, and the length is capped."""
    lines = [clean_text(line, max_chars) for line in text.replace("\r", "").split("\n")]
    out = "\n".join(lines).strip("\n")
    while "\n\n\n" in out:
        out = out.replace("\n\n\n", "\n\n")
    return out[:max_chars].rstrip()


def clean_text(text: str, max_chars: int) -> str:
    """Drop control and format characters (keeping newlines and tabs as spaces), collapse runs of
    whitespace, and cap the length at a word boundary when one is near."""
    kept = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch in "\n\t\r":
            kept.append(" ")
        elif cat in ("Cc", "Cf", "Cs", "Co", "Cn"):
            continue
        else:
            kept.append(ch)
    out = " ".join("".join(kept).split())
    if len(out) <= max_chars:
        return out
    cut = out[:max_chars]
    space = cut.rfind(" ")
    # Cut at the last word boundary unless that would throw away more than a fifth of the text.
    return (cut[:space] if space >= max_chars * 0.8 else cut).rstrip()


class Insight(BaseModel):
    """A learned memory item and its measured effect.

    Rules (`strategy`, `constraint`, `format`, `pitfall`) are one line of guidance in `text`. A
    worked example (`example`) is a training problem in `text` and a short verified solution of it,
    ending in its answer line, in `solution`; the solver shows it as an earlier exchange.

    `uses`, `utility_sum`, `utility_sq` and `successes` accumulate `reward − baseline` over every
    episode that had the insight in its prompt. `version` is the memory version of the row's last
    change. `status`: pending (awaiting the admission test), active (retrieved), retired (kept for
    provenance, never retrieved). `absorbed` marks an insight folded into the weights.
    """

    id: str = Field(min_length=1)
    text: str = Field(min_length=1)
    kind: InsightKind = "strategy"
    applies_when: str = ""
    family: str | None = None
    status: InsightStatus = "pending"
    uses: int = Field(0, ge=0)
    utility_sum: float = 0.0
    utility_sq: float = Field(0.0, ge=0)
    successes: int = Field(0, ge=0)
    source_episodes: list[str] = Field(default_factory=list)
    source_tasks: list[str] = Field(default_factory=list)
    model: str = ""
    created: float = 0.0
    version: int = Field(0, ge=0)
    absorbed: bool = False
    meta: dict[str, Any] = Field(default_factory=dict)
    solution: str = ""

    @property
    def utility(self) -> float:
        """Mean `reward − baseline` over its uses (0 when never used)."""
        return self.utility_sum / self.uses if self.uses else 0.0

    def utility_bounds(self, z: float) -> tuple[float, float]:
        return interval_from_sums(self.uses, self.utility_sum, self.utility_sq, z, UTILITY_RANGE)

    @property
    def utility_ci(self) -> tuple[float, float]:
        """95 % interval of the mean utility."""
        return self.utility_bounds(1.96)

    @property
    def success_rate(self) -> float:
        return self.successes / self.uses if self.uses else 0.0

    @property
    def prompt_tokens(self) -> int:
        """Approximate prompt cost of the item (4 characters per token)."""
        return math.ceil((len(self.text) + len(self.solution)) / 4)


class TaskStats(BaseModel):
    """An insight's accumulated credit on one task (the per-neighbour statistics CORE retrieves by)."""

    insight_id: str
    task_id: str
    uses: int = Field(0, ge=0)
    utility_sum: float = 0.0
    utility_sq: float = Field(0.0, ge=0)
    successes: int = Field(0, ge=0)

    @property
    def utility(self) -> float:
        return self.utility_sum / self.uses if self.uses else 0.0


class Attempt(BaseModel):
    """A verified attempt at a task (normally a correct one), kept so a later failure can be shown
    beside the most similar success."""

    id: str = Field(default_factory=lambda: new_id("a"))
    task_id: str = Field(min_length=1)
    task_text: str
    family: str | None = None
    text: str
    reward: float = Field(ge=0.0, le=1.0)
    created: float = Field(default_factory=time.time)


class MemoryEvent(BaseModel):
    """One committed change: its version, time, kind and a JSON summary (row snapshots left out)."""

    version: int
    ts: float
    kind: str
    payload: dict[str, Any] = Field(default_factory=dict)

    @property
    def summary(self) -> str:
        p = self.payload
        keys = ("insight_id", "id", "status", "to", "reason", "task_id", "delta", "text")
        parts = [f"{k}={p[k]}" for k in keys if k in p]
        if "insight_ids" in p:
            parts.append(f"{len(p['insight_ids'])} insight(s)")
        return " ".join(parts)


class InsightChange(BaseModel):
    """How one insight differs between two versions; `fields` maps a field to (before, after)."""

    id: str
    fields: dict[str, tuple[Any, Any]] = Field(default_factory=dict)
    before: Insight
    after: Insight


class MemoryDiff(BaseModel):
    """The insights added, removed and changed from version `v1` to `v2`, and the events between."""

    v1: int
    v2: int
    added: list[Insight] = Field(default_factory=list)
    removed: list[Insight] = Field(default_factory=list)
    changed: list[InsightChange] = Field(default_factory=list)
    events: list[MemoryEvent] = Field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)


class ImportReport(BaseModel):
    """What `import_jsonl` did with each kind of line."""

    added: int = Field(0, ge=0)
    merged: int = Field(0, ge=0)
    skipped: int = Field(0, ge=0)
    attempts: int = Field(0, ge=0)
    tasks: int = Field(0, ge=0)
    baselines: int = Field(0, ge=0)
