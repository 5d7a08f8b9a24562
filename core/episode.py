"""Episode records: the search tree, its root-to-leaf trajectories, and what an episode used and spent.

These are plain data (pydantic) and round-trip through JSON without loss. The tree is stored flat
(`nodes` indexed by id, each with its parent and children ids) so it serializes simply and can be
walked either way.
"""

from __future__ import annotations

import time
from typing import Any

from insightloop.core.task import Reward, Task
from pydantic import BaseModel, Field


class Node(BaseModel):
    """One reasoning step. The root (id 0) has empty `step_text` and stands for the prompt.

    `visits` and `value` are MCTS statistics (`value` is the mean backed-up reward); `reward` is the
    verified reward of the rollout simulated from this node when it was created (None for the root
    or an unsimulated node); `rollout_text` is that rollout's continuation after this node's path.
    """

    id: int
    parent: int | None = None
    children: list[int] = Field(default_factory=list)
    depth: int = 0
    step_text: str = ""
    visits: int = 0
    value_sum: float = 0.0
    reward: float | None = None
    rollout_text: str | None = None
    parsed_answer: str | None = None
    terminal: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def value(self) -> float:
        return self.value_sum / self.visits if self.visits else 0.0


class SearchTree(BaseModel):
    """A flat tree of `Node`s; node 0 is the root."""

    nodes: list[Node] = Field(default_factory=lambda: [Node(id=0)])

    @property
    def root(self) -> Node:
        return self.nodes[0]

    def add(self, parent: int, step_text: str, **kw: Any) -> Node:
        node = Node(id=len(self.nodes), parent=parent, depth=self.nodes[parent].depth + 1,
                    step_text=step_text, **kw)
        self.nodes.append(node)
        self.nodes[parent].children.append(node.id)
        return node

    def path(self, node_id: int) -> list[Node]:
        """Nodes from the root's first child down to `node_id` (the root itself excluded)."""
        out: list[Node] = []
        cur: int | None = node_id
        while cur is not None and cur != 0:
            out.append(self.nodes[cur])
            cur = self.nodes[cur].parent
        return out[::-1]

    def path_text(self, node_id: int) -> str:
        return "".join(n.step_text for n in self.path(node_id))

    def leaves(self) -> list[Node]:
        return [n for n in self.nodes if n.id != 0 and not n.children]


class Trajectory(BaseModel):
    """A complete attempt: the steps taken in the tree plus the rollout that finished it."""

    node_ids: list[int] = Field(default_factory=list)
    steps: list[str] = Field(default_factory=list)
    text: str
    reward: float
    parsed_answer: str | None = None
    visits: int = 0
    value: float = 0.0

    @property
    def correct(self) -> bool:
        return self.reward >= 1.0

    @property
    def n_steps(self) -> int:
        return len(self.steps)


class Episode(BaseModel):
    """One attempt at a task: what was retrieved, the search, the answer chosen, and the spend."""

    id: str
    task: Task
    insights_used: list[str] = Field(default_factory=list)
    prompt: str = ""
    strategy: str = "mcts"
    tree: SearchTree = Field(default_factory=SearchTree)
    trajectories: list[Trajectory] = Field(default_factory=list)
    best: Trajectory | None = None
    answer: str | None = None
    reward: Reward | None = None
    rollouts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    started: float = Field(default_factory=time.time)
    finished: float | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @property
    def correct(self) -> bool:
        return self.reward is not None and self.reward.correct

    @property
    def seconds(self) -> float:
        return (self.finished or self.started) - self.started


class Chain(BaseModel):
    """A reasoning chain written for a task (e.g. by the synthesizer), with the verifier's verdict."""

    task: Task
    text: str
    verified: bool
    source_episode: str | None = None
    created: float = Field(default_factory=time.time)
