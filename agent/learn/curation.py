"""Curation: a training episode's lessons become candidate memory items, and the admitted ones are
stored with their provenance.

For each training episode the `Curator` gathers candidates — the episode's shortest verified attempt
as a worked example, and, when the tree holds failures, the analyst's rules from contrast pairs
(each pair says why the verifier rejected its negative) and a synthesized chain — and puts them all
through one admission test: the paired teacher-forced test on the training problems
(`agent.learn.admission`) when the policy can score, else CORE's one try alone on the source
problem. Every analysis, synthesis, try and scoring pass is charged to the budget.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from pathlib import Path

from insightloop.agent.learn.admission import AdmissionTest, Candidate, Verdict, answer_line
from insightloop.agent.learn.analyst import Analysis, Analyst
from insightloop.agent.learn.candidates import chain_candidate, example_candidate, rule_candidates
from insightloop.agent.learn.memory import Memory
from insightloop.agent.learn.pairs import Pair, failures_of, memory_pair, select_pairs
from insightloop.agent.learn.reports import TrainReport
from insightloop.agent.learn.synthesis import synthesize
from insightloop.agent.search.solve import solve_many
from insightloop.core import events as ev
from insightloop.core.budget import Budget
from insightloop.core.config import Config, SearchConfig
from insightloop.core.episode import Chain, Episode
from insightloop.core.lm import LM, Scorer
from insightloop.core.task import Reward, Task
from insightloop.memory.chains import append_chains

VerifyFn = Callable[[Task, str], Reward]
ADMIT_REASON = "solved its source problem alone in the prompt"
FAIL_REASON = "did not solve its source problem alone in the prompt"


def eval_search(cfg: Config, temperature: float | None = None, rollouts: int | None = None) -> SearchConfig:
    """Evaluation and admission attempts: whole samples, greedy by default (a paired measurement)."""
    loop = cfg.loop
    return cfg.search.model_copy(update={
        "strategy": "sample", "rollouts": rollouts or loop.eval_samples,
        "temperature": loop.eval_temperature if temperature is None else temperature})


class Curator:
    """Turns training episodes into admitted memory items (see the module docstring)."""

    def __init__(self, policy: LM, analyst: LM, store: Memory, cfg: Config, rng: random.Random,
                 emit: ev.EventSink, report: TrainReport, *, verify: VerifyFn, run_dir: Path | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.analyst_lm = analyst
        self.store = store
        self.cfg = cfg
        self.rng = rng
        self.emit = emit
        self.report = report
        self._verify = verify
        self.run_dir = run_dir
        self.clock = clock
        fmt = cfg.loop.analyst_format
        if fmt == "auto" and (cfg.analyst or cfg.policy).model == "embedded":
            fmt = "lines"  # a 135M model does not write valid JSON; do not pay for the tries
        self.analyst = Analyst(analyst, fmt, cfg.loop.analyst_retries, cfg.loop.analyst_tokens,
                               cfg.loop.analyst_temperature, seed=cfg.seed, drafts=cfg.loop.analyst_drafts)
        paired = cfg.loop.admission == "paired" and isinstance(policy, Scorer)
        self.admission = AdmissionTest(policy, cfg.loop, random.Random(cfg.seed)) if paired else None  # type: ignore[arg-type]
        self.references: dict[str, str] = {}  # task id -> its shortest verified solution
        self.exemplified: set[str] = set()  # task ids with a worked example in memory
        self.train_tasks: list[Task] = []

    def learn_from(self, ep: Episode, budget: Budget) -> None:
        """Candidates from one training episode, through the admission test into memory."""
        cands = self._example_candidates(ep)
        if not ep.correct or any(not t.correct for t in ep.trajectories):
            cands += self._contrast(ep, budget)
        self._admit(ep, cands, budget)

    def note_solution(self, task_id: str, text: str) -> None:
        """Keep the shortest verified solution per task: the reference the admission test scores."""
        ref = self.references.get(task_id)
        if text.strip() and (ref is None or len(text.strip()) < len(ref)):
            self.references[task_id] = text.strip()

    def _example_candidates(self, ep: Episode) -> list[Candidate]:
        """The episode's shortest verified attempt, unless the task already has an example in memory."""
        loop = self.cfg.loop
        if not loop.examples or ep.task.id in self.exemplified:
            return []
        cand = example_candidate(ep, loop.example_chars)
        return [cand] if cand is not None else []

    def pairs_for(self, ep: Episode) -> list[Pair]:
        """Tree pairs around the anchor; with no correct attempt, failures vs the closest stored success.
        Each pair says why the verifier rejected its negative."""
        loop = self.cfg.loop
        pairs = select_pairs(ep.trajectories, loop.pairs, loop.hard_fraction, self.rng, ep.tree)
        if not pairs:
            hits = self.store.similar_attempts(ep.task.prompt, 1, ep.task.family)
            if not hits:
                return []
            attempt = hits[0][0]
            pairs = [memory_pair(f, attempt.text, attempt.task_id)
                     for f in failures_of(ep.trajectories, loop.pairs, self.rng)]
        return [p.model_copy(update={"rejection": self._rejection(ep.task, p.negative.text)}) for p in pairs]

    def _rejection(self, task: Task, text: str) -> str:
        verdict = self._verify(task, text)
        if verdict.error:
            return verdict.error
        return f"its answer {verdict.parsed_answer!r} is wrong" if verdict.parsed_answer else "no answer"

    def _contrast(self, ep: Episode, budget: Budget) -> list[Candidate]:
        pairs = self.pairs_for(ep)
        if not pairs or budget.exhausted():
            return []
        analyses = self.analyst.analyze_many(ep.task, pairs, budget)
        self.report.analyses += len(analyses)
        self.report.analyses_failed += sum(a is None for a in analyses)
        found = [(p, a) for p, a in zip(pairs, analyses, strict=True) if a is not None]
        if not found:
            return []
        for pair, analysis in found:
            for ins in analysis.insights:
                self.report.insights_proposed += 1
                self.emit(ev.InsightProposed(text=ins.text, task_id=ep.task.id, episode_id=ep.id,
                                             pair_kind=pair.kind))
        rules, rejected = rule_candidates(ep, found, self.cfg.loop.max_candidates)
        for text, reason in rejected:
            self._reject(text, ep.task, reason)
        chain = self._synthesize(ep, found[0][1], budget) if self.cfg.loop.synthesize else None
        example = chain_candidate(chain, self.cfg.loop.example_chars) if chain is not None else None
        if example is not None and self.cfg.loop.examples and ep.task.id not in self.exemplified:
            rules.append(example)
        return rules

    def _reject(self, text: str, task: Task, reason: str) -> None:
        self.report.insights_rejected += 1
        self.report.rejections[reason] = self.report.rejections.get(reason, 0) + 1
        self.emit(ev.InsightRejected(text=text, task_id=task.id, reason=reason))

    def _synthesize(self, ep: Episode, analysis: Analysis, budget: Budget) -> Chain | None:
        s = self.cfg.search
        chain = synthesize(ep.task, analysis, self.policy, self._verify, budget, s.answer_tokens,
                           s.temperature, self.rng.randrange(2**31), ep.id)
        if chain is None:
            return None
        self.report.chains_tried += 1
        if chain.verified:
            self.report.chains_verified += 1
            if self.run_dir is not None:
                append_chains(self.run_dir, [chain])
        self.emit(ev.ChainSynthesized(task_id=ep.task.id, episode_id=ep.id, verified=chain.verified))
        return chain

    # -- admission -------------------------------------------------------------------------------
    def _admit(self, ep: Episode, cands: list[Candidate], budget: Budget) -> None:
        """The paired test on the training problems when the policy can score; else CORE's one try
        alone on the source problem."""
        if not cands or budget.exhausted():
            return
        if self.admission is not None:
            verdicts = self.admission.judge(cands, self._problems(), budget)
        else:
            verdicts = self._source_tries(ep, cands, budget)
        for cand, verdict in zip(cands, verdicts, strict=True):
            if verdict.admitted:
                self._add(ep, cand, verdict)
            else:
                self._reject(cand.hint.text if cand.kind != "example" else "worked example", ep.task,
                             verdict.reason or FAIL_REASON)

    def _problems(self) -> list[tuple[Task, str]]:
        """Training problems with their references: the shortest verified solution, else the answer line."""
        if self.cfg.loop.admission_reference == "answer":
            return [(t, answer_line(t)) for t in self.train_tasks]
        return [(t, self.references.get(t.id) or answer_line(t)) for t in self.train_tasks]

    def _source_tries(self, ep: Episode, cands: list[Candidate], budget: Budget) -> list[Verdict]:
        """CORE's test: each candidate alone in the prompt gets one counted try on its source problem."""
        loop = self.cfg.loop
        left = budget.remaining_rollouts()
        fit = cands[: len(cands) if left is None else left]
        spent = Verdict(admitted=False, reason="no budget left for an admission try")
        if not fit or not budget.allows(len(fit)):
            return [spent] * len(cands)
        temp = loop.admission_temperature if loop.admission_temperature is not None else loop.eval_temperature
        hints = iter([c.hint for c in fit])  # solve_many asks for insights once per task, in order
        trials = solve_many([ep.task] * len(fit), self.policy, eval_search(self.cfg, temp, 1),
                            lambda _t: [next(hints)], budget=budget, clock=self.clock)
        out = [Verdict(admitted=t.correct, reason=ADMIT_REASON if t.correct else FAIL_REASON, episode=t.id)
               for t in trials]
        return out + [spent] * (len(cands) - len(fit))

    def _add(self, ep: Episode, cand: Candidate, verdict: Verdict) -> None:
        meta = {**cand.meta, "admission": verdict.model_dump(exclude={"episode"}),
                "admission_episode": verdict.episode, "analyst_format": self.analyst.fmt}
        applies = str(cand.meta.get("applies_when", ""))
        ins, created = self.store.add_insight(cand.hint.text, cand.kind, applies, ep.task.family, ep.id,
                                              cand.source_task, self._producer(cand), meta,
                                              solution=cand.hint.solution)
        self.store.record_admission(ins.id, True, verdict.reason or ADMIT_REASON)
        if cand.kind == "example" and cand.source_task is not None:
            self.exemplified.add(cand.source_task)
        self.report.insights_admitted += 1
        self.emit(ev.InsightAdmitted(insight_id=ins.id, text=ins.text, task_id=ep.task.id, episode_id=ep.id,
                                     created=created))

    def _producer(self, cand: Candidate) -> str:
        return self.policy.name if cand.kind == "example" else self.analyst_lm.name
