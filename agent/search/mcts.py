"""Monte Carlo Tree Search over reasoning steps (select, expand, simulate, backpropagate).

Each iteration picks a leaf by UCT, samples up to `width` next steps for it in one batched request,
rolls every new child out to a full answer (all children's rollouts in one batch), verifies them,
and backs the rewards up to the root. A rollout is one verified completion; the search never starts
more rollouts than its `Budget` has left, so with k < width left it expands only k children.

The search runs as a generator (see `SearchRun`) so a driver can batch several searches together.
Randomness comes only from the injected `random.Random`, which also seeds every request.
"""

from __future__ import annotations

import math
import random
from collections.abc import Generator

from insightloop.agent.search.domain import ReasoningDomain, Reply, Request, SearchRun, has_answer
from insightloop.core.budget import Budget
from insightloop.core.episode import Node, SearchTree

SEED_SPACE = 2**31 - 1


def uct(parent: Node, child: Node, c: float) -> float:
    """`Q + c * sqrt(ln N_parent / N)`; an unvisited child scores infinity so it is tried first."""
    if child.visits == 0:
        return math.inf
    explore = math.sqrt(math.log(max(parent.visits, 1)) / child.visits)
    return child.value + c * explore


class MCTS:
    """UCT search over the steps of one task."""

    def __init__(self, domain: ReasoningDomain, budget: Budget, rng: random.Random,
                 tree: SearchTree | None = None):
        self.domain = domain
        self.budget = budget
        self.rng = rng
        self.tree = tree or SearchTree()
        self.width = domain.cfg.width
        self.c = domain.cfg.c_uct

    def run(self) -> SearchRun:
        while (k := self.room()) > 0:
            leaf = self.select()
            if leaf is None:  # every branch ends in a terminal node: nothing left to explore
                return
            children = yield from self.expand(leaf, k)
            if not children:
                # The model produced no usable step here; close the node so selection moves on.
                leaf.terminal = True
                continue
            yield from self.simulate(children)
            self.backpropagate(children)

    def room(self) -> int:
        """How many children the next expansion may create: min(width, rollouts left), 0 to stop."""
        left = self.budget.remaining_rollouts()
        k = self.width if left is None else min(self.width, left)
        return k if k > 0 and self.budget.allows(k) else 0

    def is_open(self, node: Node) -> bool:
        """Whether the subtree under `node` still has a non-terminal leaf to grow."""
        if node.terminal:
            return False
        return not node.children or any(self.is_open(self.tree.nodes[c]) for c in node.children)

    def select(self) -> Node | None:
        """Descend from the root by UCT through open children to a leaf; None if all are closed."""
        node = self.tree.root
        if not self.is_open(node):
            return None
        while node.children:
            kids = [self.tree.nodes[c] for c in node.children if self.is_open(self.tree.nodes[c])]
            # max() keeps the first of equal scores, so ties go to the earliest child: deterministic.
            node = max(kids, key=lambda ch, p=node: uct(p, ch, self.c))
        return node

    def expand(self, leaf: Node, k: int) -> Generator[list[Request], list[Reply], list[Node]]:
        """Sample k candidate next steps in one request; add the distinct ones as children."""
        depth = leaf.depth + 1
        req = self.domain.propose_request(self.tree.path_text(leaf.id), depth, k, self.next_seed())
        (gens,) = yield [req]
        assert isinstance(gens, list)
        self.budget.charge(gens)
        existing = [self.tree.nodes[c].step_text for c in leaf.children]
        children = []
        for step in self.domain.propose(gens, depth, existing):
            children.append(self.tree.add(
                leaf.id, step.text, terminal=self.domain.is_terminal(step.text, depth),
                prompt_tokens=step.generation.prompt_tokens,
                completion_tokens=step.generation.completion_tokens))
        return children

    def simulate(self, children: list[Node]) -> Generator[list[Request], list[Reply], None]:
        """Roll each new child out to a full answer (one batch) and verify it: the child's reward."""
        paths = {c.id: self.tree.path_text(c.id) for c in children}
        # A child that already states the answer needs no generation, only verification.
        pending = [c for c in children if not has_answer(c.step_text)]
        reqs: list[Request] = [self.domain.rollout_request(paths[c.id], self.next_seed()) for c in pending]
        replies = (yield reqs) if reqs else []
        conts: dict[int, str] = {c.id: "" for c in children}
        gens = [g for r in replies if isinstance(r, list) for g in r]
        for child, gen in zip(pending, gens, strict=True):
            conts[child.id] = self.domain.continuation(paths[child.id], gen)
            child.prompt_tokens += gen.prompt_tokens
            child.completion_tokens += gen.completion_tokens
        self.budget.charge(gens, rollouts=len(children))
        fulls = yield from self.domain.choose_all([paths[c.id] + conts[c.id] for c in children], self.budget)
        for child, full in zip(children, fulls, strict=True):
            self._settle(child, paths[child.id], full)

    def _settle(self, child: Node, path: str, full: str) -> None:
        """Verify a child's complete attempt; a chosen answer may rewrite the end of its own step."""
        if has_answer(child.step_text):  # the answer is in the child's own step: the step ends with it
            parent = path[: len(path) - len(child.step_text)]
            child.step_text, path = full[len(parent) :], full
        reward = self.domain.score(full)
        child.rollout_text = full[len(path) :]
        child.reward = reward.score
        child.parsed_answer = reward.parsed_answer or self.domain.extract(full)

    def backpropagate(self, children: list[Node]) -> None:
        """Add each child's reward and one visit to it and to every ancestor up to the root."""
        for child in children:
            cur: int | None = child.id
            while cur is not None:
                node = self.tree.nodes[cur]
                node.visits += 1
                node.value_sum += child.reward or 0.0
                cur = node.parent

    def next_seed(self) -> int:
        return self.rng.randrange(SEED_SPACE)
