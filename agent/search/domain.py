"""The reasoning domain: prompts, step proposals, terminal tests and rollouts for one task.

A state is the text of the reasoning path so far: numbered steps `Step 1: ...` separated by blank
lines, ending with `Answer: <answer>`. One node of a search tree is one step. This module knows the
format and builds the `GenRequest`s; it knows nothing about how a search picks which state to grow,
so MCTS and plain sampling share it.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from typing import Protocol

from insightloop.core.budget import Budget
from insightloop.core.config import SearchConfig
from insightloop.core.episode import SearchTree
from insightloop.core.lm import Generation, GenRequest, Message, ScoreRequest, Scores
from insightloop.core.prompt import Hint
from insightloop.core.task import ClosedAnswers, Reward, Task, Verifier
from pydantic import BaseModel

SYSTEM_PROMPT = (
    "Solve the problem step by step. Write numbered steps (Step 1: ..., Step 2: ...), each followed "
    "by a blank line. Finish with a last line of the form 'Answer: <answer>'."
)
INSIGHTS_HEADER = "Insights from past problems:"
STEP_STOPS = ("\n\n", "\nStep ")
# The solver starts every whole attempt with this assistant text (`rollout_request`).
ATTEMPT_PRIMER = "Step 1:"
_MARKER = re.compile(r"^\s*step\s*\d+\s*[:.)]\s*", re.IGNORECASE)
_ANSWER = re.compile(r"\banswer\s*:", re.IGNORECASE)
# A rollout can stop once its answer line is complete: the text after it is cut anyway.
ANSWER_LINE = r"(?i)\banswer\s*:[^\n]*\S[^\n]*\n"


class Step(BaseModel):
    """A proposed next step, normalized, with the generation that produced it."""

    text: str
    key: str
    generation: Generation


def has_answer(text: str) -> bool:
    """Whether the text contains a final `Answer:` line."""
    return _ANSWER.search(text) is not None


def cut_after_answer(text: str) -> str:
    """Drop whatever the model wrote after the line holding its first `Answer:`."""
    m = _ANSWER.search(text)
    if m is None:
        return text
    end = text.find("\n", m.end())
    return text if end < 0 else text[:end]


CONTENT_FREE = "N/A"


def answer_stem(text: str) -> str:
    """The text up to and including its first `Answer:`; with none, the text plus an answer line."""
    m = _ANSWER.search(text)
    if m is not None:
        return text[: m.end()]
    return text.rstrip() + "\nAnswer:"


def step_key(text: str) -> str:
    """Duplicate-detection key: the step body without its marker, case and spacing folded."""
    return " ".join(_MARKER.sub("", text).lower().split())


def normalize_step(raw: str, depth: int) -> str:
    """Make one generated step self-contained: `Step <depth>: <body>` plus the blank-line separator."""
    body = _MARKER.sub("", raw.strip()).strip()
    return f"Step {depth}: {body}\n\n"


def build_messages(task: Task, hints: Sequence[str | Hint] = (),
                   system: str = SYSTEM_PROMPT) -> tuple[Message, ...]:
    """The chat prompt: format instructions and rules as system, worked examples as earlier
    exchanges, then the task as user."""
    items = [Hint.of(h) for h in hints]
    rules = [h.text.strip() for h in items if h.kind == "rule"]
    if rules:
        system += "\n\n" + INSIGHTS_HEADER + "\n" + "\n".join(f"- {r}" for r in rules)
    msgs = [Message(role="system", content=system)]
    for ex in (h for h in items if h.kind == "example"):
        msgs += [Message(role="user", content=ex.text), Message(role="assistant", content=ex.solution)]
    return (*msgs, Message(role="user", content=task.prompt))


class ReasoningDomain:
    """States, proposals and scoring for one task under one search configuration.

    With `can_score` (the LM is a `Scorer`), `answer_mode: choose` and a verifier that knows the
    task's closed answer set, `options` holds that set: every complete attempt then ends with the
    option the model finds most likely after its own `Answer:` (see `answer_request`/`choose`).
    """

    def __init__(self, task: Task, cfg: SearchConfig, verifier: Verifier, insights: Sequence[str | Hint] = (),
                 can_score: bool = False):
        self.task = task
        self.cfg = cfg
        self.verifier = verifier
        self.insights = list(insights)
        self.messages = build_messages(task, self.insights)
        self.verifiable = True
        closed = isinstance(verifier, ClosedAnswers) and cfg.answer_mode == "choose" and can_score
        self.options = verifier.options(task) if closed else None  # type: ignore[union-attr]
        self.prior: list[float] | None = None  # the options' log-probabilities after a content-free input

    def content_free_request(self) -> ScoreRequest:
        """The options scored after the task's prompt with its content replaced by "N/A" (Zhao et al.
        2021): what the model would answer knowing nothing of the problem, its label prior."""
        assert self.options is not None
        blank = build_messages(self.task.model_copy(update={"prompt": CONTENT_FREE}), self.insights)
        return ScoreRequest(messages=blank, assistant_prefix="Answer:",
                            continuations=tuple(" " + o for o in self.options))

    def propose_request(self, path: str, depth: int, width: int, seed: int) -> GenRequest:
        """One batched request for `width` candidate steps number `depth` after `path`."""
        # Starting the assistant text with the step marker keeps even a small model in the format.
        return GenRequest(messages=self.messages, assistant_prefix=path + f"Step {depth}:", n=width,
                          max_tokens=self.cfg.step_tokens, temperature=self.cfg.temperature,
                          stop=STEP_STOPS, seed=seed)

    def propose(self, gens: list[Generation], depth: int, existing: Sequence[str] = ()) -> list[Step]:
        """Normalize the sampled steps; drop empty ones, failed ones and duplicates."""
        seen = set(existing)
        out: list[Step] = []
        for g in gens:
            if g.finish_reason == "error":
                continue
            text = normalize_step(f"Step {depth}:" + g.text, depth)
            key = step_key(text)
            if key and key not in seen:
                seen.add(key)
                out.append(Step(text=text, key=key, generation=g))
        return out

    def is_terminal(self, step: str, depth: int) -> bool:
        """A step ends the path if it gives the final answer or the depth cap is reached."""
        return has_answer(step) or depth >= self.cfg.max_depth

    def rollout_request(self, path: str, seed: int, n: int = 1) -> GenRequest:
        """Continue from `path` to a full answer (for `n` samples of a whole attempt, `path` may be '')."""
        return GenRequest(messages=self.messages, assistant_prefix=path or ATTEMPT_PRIMER, n=n,
                          max_tokens=self.cfg.answer_tokens, temperature=self.cfg.temperature, seed=seed,
                          stop_pattern=ANSWER_LINE)

    def continuation(self, path: str, gen: Generation) -> str:
        """The rollout text after `path`, cut after the answer line."""
        head = "" if path else ATTEMPT_PRIMER
        return cut_after_answer(head + gen.text)

    def answer_request(self, full_text: str) -> ScoreRequest:
        """Score the options after the attempt's first `Answer:` (one is added if it has none)."""
        assert self.options is not None
        return ScoreRequest(messages=self.messages, assistant_prefix=answer_stem(full_text),
                            continuations=tuple(" " + o for o in self.options))

    def choose(self, full_text: str, scores: Scores) -> str:
        """The attempt with its answer replaced by the most likely option."""
        assert self.options is not None
        prior = self.prior or [0.0] * len(self.options)
        best = max(range(len(self.options)), key=lambda i: scores.logprobs[i] - prior[i])
        return answer_stem(full_text) + " " + self.options[best]

    def choose_all(self, texts: list[str], budget: Budget) -> Generator[list[Request], list[Reply], list[str]]:
        """With a closed answer set, replace each attempt's answer by its most likely option."""
        if self.options is None or not texts:
            return texts
        calibrate = self.cfg.calibrate and self.prior is None  # the prior is scored once per task
        reqs = [self.answer_request(t) for t in texts] + ([self.content_free_request()] if calibrate else [])
        replies = yield reqs
        scores = [r for r in replies if isinstance(r, Scores)]
        budget.charge_scores(scores)
        if calibrate:
            self.prior = list(scores.pop().logprobs)
        return [self.choose(t, s) for t, s in zip(texts, scores, strict=True)]

    def score(self, full_text: str) -> Reward:
        """Verify a complete attempt.

        Verifiers never raise on model text; they raise ValueError when the task itself cannot be
        checked (an unlabeled task). Such a task scores 0 everywhere and `verifiable` turns False,
        so the episode picks its answer by vote instead.
        """
        try:
            return self.verifier.verify(self.task, full_text)
        except ValueError as exc:
            self.verifiable = False
            return Reward(score=0.0, parsed_answer=self.extract(full_text), error=f"not verifiable: {exc}")

    def extract(self, full_text: str) -> str | None:
        return self.verifier.extract(self.task, full_text)


# A search runs as a generator: it yields the requests it needs next (generations, or scores of
# answer options) and receives their replies. The driver decides how to serve them, so one batch
# can carry the requests of many searches.
Request = GenRequest | ScoreRequest
Reply = list[Generation] | Scores
SearchRun = Generator[list[Request], list[Reply], None]


class Search(Protocol):
    """A search over one task. `run()` drives it; the tree holds the result when it returns."""

    tree: SearchTree

    def run(self) -> SearchRun: ...
