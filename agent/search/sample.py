"""The `sample` strategy: N independent full attempts in one request (n=N), each verified.

Cheap runs and baselines. The attempts are stored as children of the root in the same `SearchTree`
shape MCTS produces (one terminal node per attempt, one visit each), so episode consumers need not
care which strategy ran.
"""

from __future__ import annotations

import random

from insightloop.agent.search.domain import ReasoningDomain, SearchRun
from insightloop.agent.search.mcts import SEED_SPACE
from insightloop.core.budget import Budget
from insightloop.core.episode import SearchTree


class Sampler:
    """Draws as many whole attempts as the rollout budget allows (at most `cfg.rollouts`)."""

    def __init__(self, domain: ReasoningDomain, budget: Budget, rng: random.Random,
                 tree: SearchTree | None = None):
        self.domain = domain
        self.budget = budget
        self.rng = rng
        self.tree = tree or SearchTree()

    def size(self) -> int:
        left = self.budget.remaining_rollouts()
        n = self.domain.cfg.rollouts if left is None else min(self.domain.cfg.rollouts, left)
        return n if n > 0 and self.budget.allows(n) else 0

    def run(self) -> SearchRun:
        n = self.size()
        if n == 0:
            return
        (gens,) = yield [self.domain.rollout_request("", self.rng.randrange(SEED_SPACE), n=n)]
        assert isinstance(gens, list)
        self.budget.charge(gens, rollouts=len(gens))
        texts = yield from self.domain.choose_all([self.domain.continuation("", g) for g in gens], self.budget)
        root = self.tree.root
        for gen, text in zip(gens, texts, strict=True):
            reward = self.domain.score(text)
            self.tree.add(0, text, terminal=True, visits=1, value_sum=reward.score, reward=reward.score,
                          rollout_text="", prompt_tokens=gen.prompt_tokens,
                          completion_tokens=gen.completion_tokens,
                          parsed_answer=reward.parsed_answer or self.domain.extract(text))
            root.visits += 1
            root.value_sum += reward.score
