"""The analyst: contrast a better and a worse attempt into candidate insights, and synthesize chains.

`Analyst.analyze(task, pair, budget)` shows the analyst LM both attempts (it is told which one the
verifier accepted) and asks for the step-level critique at the divergence point, the
trajectory-level strategic pivot, the success pattern and failure mode, and short, general,
actionable insights ("When ..., do/avoid ..."). Two output formats fill the same pydantic
`Analysis`:

- `json`: a JSON object validated against the schema; an invalid reply is retried with the
  validation error fed back (tenacity, bounded by `retries`).
- `lines`: fixed `KEY: value` lines, for small models that cannot write JSON. Each line is
  generated in its own batched call whose assistant text is pre-filled with the key and the
  line's opening words ("INSIGHT: When"): prefix-constrained decoding that keeps even a 135M model
  in the template instead of copying it.

Leak checks live in `agent.learn.leaks`, chain synthesis in `agent.learn.synthesis`.
"""

from __future__ import annotations

import json
from typing import Literal

from insightloop.agent.learn.pairs import Pair, steps_of
from insightloop.core.budget import Budget
from insightloop.core.lm import LM, Generation, GenRequest, Message
from insightloop.core.task import Task
from pydantic import BaseModel, Field, ValidationError, field_validator
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

Format = Literal["json", "lines", "auto"]
LINE_KEYS = {"STEP": "step_critique", "PIVOT": "strategic_pivot", "SUCCESS": "success_pattern",
             "FAILURE": "failure_mode"}


class AnalystFormatError(ValueError):
    """The analyst's reply did not fit the schema; the message is fed back on retry."""


class CandidateInsight(BaseModel):
    """One proposed insight: a general rule, not a fact about one problem."""

    text: str = Field(min_length=12, max_length=400)
    applies_when: str = ""
    kind: Literal["strategy", "constraint", "format", "pitfall"] = "strategy"

    @field_validator("text")
    @classmethod
    def _general_rule(cls, v: str) -> str:
        v = " ".join(v.split()).strip(" \"'-*")
        if "<" in v and ">" in v:
            raise ValueError("fill in the template: no <placeholders>")
        if len(v.split()) < 4:
            raise ValueError("an insight needs at least 4 words: 'When <situation>, <do/avoid ...>'")
        return v


class Analysis(BaseModel):
    """The analyst's verdict on one pair (`divergence_step` is 1-based, as shown to the model)."""

    divergence_step: int = Field(1, ge=1)
    step_critique: str = ""
    strategic_pivot: str = ""
    success_pattern: str = ""
    failure_mode: str = ""
    insights: list[CandidateInsight] = Field(min_length=1, max_length=5)


SYSTEM = ("You compare two attempts at the same problem. The verifier accepted one and rejected the "
          "other. Find where and why they differ, and write a short general lesson that helps on "
          "similar problems. Never state the final answer of this problem.")

JSON_SPEC = ('Reply with only a JSON object with these keys: "divergence_step" (int), '
             '"step_critique", "strategic_pivot", "success_pattern", "failure_mode" (strings) and '
             '"insights": a list of 1 to 3 objects {"text": "When <situation>, <do/avoid ...>.", '
             '"applies_when": "<kind of problem>", "kind": one of "strategy", "constraint", "format", '
             '"pitfall"}.')

LINES_SPEC = ("Reply with exactly three lines:\n"
              "STEP: what went wrong at line {d} of the rejected attempt.\n"
              "PIVOT: the key difference between the two attempts.\n"
              "INSIGHT: a general rule for problems like this one, starting with 'When'.")


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render_attempt(steps: list[str], limit: int) -> str:
    return _clip("\n".join(f"{s}" for s in steps), limit) or "(empty)"


def render_pair(task: Task, pair: Pair, limit: int = 700) -> str:
    """The user message: the problem and both attempts, compact, with the split point named."""
    d = pair.divergence + 1
    good = "ACCEPTED attempt" + (" (on a similar problem)" if pair.kind == "memory" else "")
    parts = [f"Problem:\n{_clip(task.prompt, limit)}",
             f"{good}:\n{_render_attempt(steps_of(pair.positive), limit)}",
             f"REJECTED attempt:\n{_render_attempt(steps_of(pair.negative), limit)}",
             f"The attempts first differ at line {d}."]
    if pair.rejection:
        parts.append(f"The verifier rejected the second attempt: {pair.rejection}.")
    whole = {pair.positive.text.strip(), pair.negative.text.strip()}
    if len(pair.siblings) >= 2 and pair.siblings[0].step_text.strip() not in whole:  # samples: nothing new
        best, worst = pair.siblings[0], pair.siblings[-1]
        parts.append(f"Where they split, the search scored '{_clip(best.step_text, 160)}' at "
                     f"{best.value:.2f} and '{_clip(worst.step_text, 160)}' at {worst.value:.2f}.")
    return "\n\n".join(parts)


def _json_object(text: str) -> dict[str, object]:
    start = text.find("{")
    if start < 0:
        raise AnalystFormatError("no JSON object found; reply with a single JSON object")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise AnalystFormatError(f"invalid JSON: {e.msg} at position {e.pos}") from e
    if not isinstance(obj, dict):
        raise AnalystFormatError("the JSON value must be an object")
    return obj


def parse_json(text: str) -> Analysis:
    """Parse and validate a JSON reply; errors are phrased to be fed back to the model."""
    try:
        return Analysis.model_validate(_json_object(text))
    except ValidationError as e:
        errs = "; ".join(f"{'.'.join(str(p) for p in x['loc'])}: {x['msg']}" for x in e.errors())
        raise AnalystFormatError(f"schema errors: {errs}") from e


def parse_lines(text: str, divergence: int = 1) -> Analysis:
    """Parse `KEY: value` lines into an `Analysis`; invalid insight lines are dropped."""
    fields: dict[str, str] = {}
    insights: list[CandidateInsight] = []
    for raw in text.splitlines():
        key, sep, value = raw.strip().lstrip("-* ").partition(":")
        key, value = key.strip().upper(), value.strip()
        if not sep or not value:
            continue
        if key == "INSIGHT":
            try:
                insights.append(CandidateInsight(text=value))
            except ValidationError:
                continue
        elif key in LINE_KEYS and LINE_KEYS[key] not in fields:
            fields[LINE_KEYS[key]] = value
    try:
        return Analysis(divergence_step=divergence, insights=insights[:5], **fields)
    except ValidationError as e:
        raise AnalystFormatError("no valid 'INSIGHT: When ..., ...' line") from e


class Analyst:
    """Asks an LM for an `Analysis` of a pair, in JSON (with feedback retries) or in lines."""

    def __init__(self, lm: LM, fmt: Format = "auto", retries: int = 2, max_tokens: int = 160,
                 temperature: float = 0.3, seed: int = 0, drafts: int = 1):
        self.lm = lm
        self.drafts = drafts
        self.fmt: Format = fmt
        self.retries = retries
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.seed = seed
        self.errors: list[str] = []

    def _requests(self, msgs: list[Message], prefix: str = "", max_tokens: int | None = None,
                  stop: tuple[str, ...] = ()) -> GenRequest:
        return GenRequest(messages=tuple(msgs), assistant_prefix=prefix, n=1, stop=stop,
                          max_tokens=max_tokens or self.max_tokens, temperature=self.temperature,
                          seed=self.seed)

    def _generate(self, reqs: list[GenRequest], budget: Budget) -> list[Generation]:
        gens = [g[0] for g in self.lm.generate(reqs)]
        budget.charge(gens)  # analysis is not a verified rollout: it costs tokens, not rollouts
        return gens

    def analyze(self, task: Task, pair: Pair, budget: Budget) -> Analysis | None:
        """The analysis of one pair, or None when the analyst cannot produce a valid one."""
        return self.analyze_many(task, [pair], budget)[0]

    def analyze_many(self, task: Task, pairs: list[Pair], budget: Budget) -> list[Analysis | None]:
        """One analysis (or None) per pair. The lines format serves all pairs in one batched call."""
        out: list[Analysis | None] = [None] * len(pairs)
        if self.fmt in ("json", "auto"):
            for i, pair in enumerate(pairs):
                try:
                    out[i] = self._analyze_json(task, pair, budget)
                except AnalystFormatError as e:
                    self.errors.append(str(e))
            if self.fmt == "json":
                return out
        todo = [i for i, a in enumerate(out) if a is None]
        if todo and not budget.exhausted():
            found = self._analyze_lines(task, [pairs[i] for i in todo], budget)
            for i, a in zip(todo, found, strict=True):
                out[i] = a
        return out

    def _analyze_json(self, task: Task, pair: Pair, budget: Budget) -> Analysis:
        msgs = [Message(role="system", content=SYSTEM),
                Message(role="user", content=render_pair(task, pair) + "\n\n" + JSON_SPEC)]
        for attempt in Retrying(stop=stop_after_attempt(self.retries + 1), reraise=True,
                                retry=retry_if_exception_type(AnalystFormatError)):
            with attempt:
                if budget.exhausted():
                    raise BudgetSpent("the budget ran out during analysis")
                gen = self._generate([self._requests(msgs, max_tokens=max(self.max_tokens, 320))], budget)[0]
                if gen.finish_reason == "error":
                    raise AnalystFormatError(f"the analyst call failed: {gen.error}")
                try:
                    return parse_json(gen.text)
                except AnalystFormatError as e:
                    # Feed the error back, so the next try can repair its own reply.
                    msgs += [Message(role="assistant", content=gen.text),
                             Message(role="user", content=f"That reply was invalid ({e}). {JSON_SPEC}")]
                    raise
        raise AnalystFormatError("unreachable")  # Retrying either returns or reraises

    def _analyze_lines(self, task: Task, pairs: list[Pair], budget: Budget) -> list[Analysis | None]:
        """Fill the fields one at a time, each pre-filled with its key and opening words.

        A small model shown a format spec tends to copy it; starting every line for it (and
        stopping at the newline) is prefix-constrained decoding: it can only write the content.
        """
        convs = [[Message(role="system", content=SYSTEM),
                  Message(role="user", content=render_pair(task, p) + "\n\n"
                          + LINES_SPEC.format(d=p.divergence + 1))] for p in pairs]
        texts = [""] * len(pairs)
        tokens = max(16, self.max_tokens // len(FIELDS))
        for key, lead in FIELDS[:-1]:
            if budget.exhausted():
                return [None] * len(pairs)
            heads = [f"{texts[i]}{key}: {lead.format(d=p.divergence + 1)}" for i, p in enumerate(pairs)]
            gens = self._generate([self._requests(convs[i], prefix=heads[i], max_tokens=tokens, stop=("\n",))
                                   for i in range(len(pairs))], budget)
            texts = [h + _first_line(g.text) for h, g in zip(heads, gens, strict=True)]
        return [_try_lines(t, p.divergence + 1) for t, p in zip(self._drafts(convs, texts, tokens, budget), pairs,
                                                               strict=True)]

    def _drafts(self, convs: list[list[Message]], texts: list[str], tokens: int, budget: Budget) -> list[str]:
        """The INSIGHT line, `drafts` samples per pair: the admission test chooses among them."""
        if budget.exhausted():
            return texts
        key, lead = FIELDS[-1]
        heads = [f"{t}{key}: {lead}" for t in texts]
        reqs = [self._requests(c, prefix=h, max_tokens=tokens, stop=("\n",)).model_copy(
            update={"n": self.drafts, "temperature": max(self.temperature, 0.7 if self.drafts > 1 else 0.0)})
            for c, h in zip(convs, heads, strict=True)]
        rows = self.lm.generate(reqs)
        budget.charge([g for row in rows for g in row])
        return [t + "".join(f"{key}: {lead}{_first_line(g.text)}" for g in row)
                for t, row in zip(texts, rows, strict=True)]


FIELDS = (("STEP", "At line {d}, the rejected attempt"), ("PIVOT", "The accepted attempt"),
          ("INSIGHT", "When"))


def _first_line(text: str) -> str:
    """One line per field, even from a backend that ignores stop strings."""
    return text.split("\n")[0].rstrip() + "\n"


def _try_lines(text: str, divergence: int) -> Analysis | None:
    try:
        return parse_lines(text, divergence)
    except AnalystFormatError:
        return None


class BudgetSpent(AnalystFormatError):
    """The budget ran out before the analysis finished."""
