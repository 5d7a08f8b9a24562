"""`Recall`: finding insights for a text or a task — plain similarity search and CORE retrieval.

`search` ranks insights by the cosine of their text to a query. `retrieve` / `explain_retrieval`
gather the candidates for a task (active insights credited on its nearest training problems, plus
the most text-similar ones) and hand them to `memory.retrieval` to be scored and selected.
"""

from __future__ import annotations

import numpy as np
from insightloop.core.config import MemoryConfig
from insightloop.core.task import Task
from insightloop.memory.indexes import Indexes, Loaded
from insightloop.memory.insights import rows_by_n
from insightloop.memory.records import Insight, InsightStatus
from insightloop.memory.retrieval import Candidate, NeighbourCredit, ScoredInsight, score_candidates, select
from insightloop.memory.session import Session
from insightloop.memory.vectors import Vectors


class Recall:
    """Similarity search and CORE retrieval over one memory (see the module docstring)."""

    def __init__(self, session: Session, vectors: Vectors, indexes: Indexes, cfg: MemoryConfig) -> None:
        self.session = session
        self.vectors = vectors
        self.indexes = indexes
        self.cfg = cfg

    def search(
        self, text: str, k: int = 10, status: InsightStatus | None = None
    ) -> list[tuple[Insight, float]]:
        """Plain cosine similarity of insight texts to `text`, best first (any status unless given)."""
        if k <= 0:
            return []
        q = self.vectors.embed([text])
        with self.session.lock:
            index = self.indexes.ensure().insights
            # With a status filter some hits are dropped: fetch more, and more again if too few remain.
            fetch = k if status is None else max(4 * k, 64)
            while True:
                scores, ids = index.search(q, fetch)
                with self.session.read() as conn:
                    found = {n: ins for n, (ins, _) in rows_by_n(conn, [int(i) for i in ids[0] if i >= 0]).items()}
                hits = [
                    (found[int(i)], float(s))
                    for s, i in zip(scores[0], ids[0], strict=True)
                    if int(i) in found and (status is None or found[int(i)].status == status)
                ]
                if len(hits) >= k or fetch >= len(index):
                    return hits[:k]
                fetch *= 4

    def retrieve(
        self, task: Task, k: int | None = None, train: bool = False, token_budget: int | None = None
    ) -> list[Insight]:
        """The active insights to put in the prompt for `task` (see `memory.retrieval`): scored
        by utility on the nearest credited problems, blended with text similarity, plus a UCB
        bonus when `train`; at most `k` (default cfg.top_k) within `token_budget` prompt tokens
        (default cfg.prompt_token_budget; 0 means no limit)."""
        return [s.insight for s in self.explain_retrieval(task, k, train, token_budget)]

    def explain_retrieval(
        self, task: Task, k: int | None = None, train: bool = False, token_budget: int | None = None
    ) -> list[ScoredInsight]:
        """`retrieve` with the parts of each score (utility, effective uses, similarity, bonus)."""
        k = self.cfg.top_k if k is None else k
        budget = self.cfg.prompt_token_budget if token_budget is None else token_budget
        if k <= 0:
            return []
        q = self.vectors.embed([task.prompt])
        with self.session.lock:
            candidates = self._candidates(self.indexes.ensure(), q)
        scored = score_candidates(
            candidates,
            train=train,
            ucb_c=self.cfg.ucb_c,
            sim_weight=self.cfg.sim_weight,
            prior_uses=self.cfg.prior_uses,
        )
        return select(scored, k, budget or None, self.cfg.min_score)

    def _credit_on(self, neighbours: dict[str, float]) -> dict[str, list[NeighbourCredit]]:
        """Each insight's credit on the neighbouring tasks, by insight id."""
        credit: dict[str, list[NeighbourCredit]] = {}
        if not neighbours:
            return credit
        marks = ",".join("?" * len(neighbours))
        with self.session.read() as conn:
            for iid, tid, uses, usum in conn.execute(
                "SELECT insight_id, task_id, uses, utility_sum FROM insight_task_stats "
                f"WHERE task_id IN ({marks})",
                list(neighbours),
            ):
                credit.setdefault(iid, []).append(
                    NeighbourCredit(task_id=tid, similarity=neighbours[tid], uses=uses, utility_sum=usum)
                )
        return credit

    def _candidates(self, loaded: Loaded, q: np.ndarray) -> list[Candidate]:
        """Active insights credited on the task's neighbours, plus the most text-similar ones."""
        neighbours = dict(loaded.tasks.search(q, self.cfg.neighbours))
        _, near = loaded.insights.search(q, self.cfg.candidates * 2)
        with self.session.read() as conn:
            credit = self._credit_on(neighbours)
            ns = {int(n) for n in near[0] if n >= 0}
            if credit:
                marks = ",".join("?" * len(credit))
                ns |= {r[0] for r in conn.execute(f"SELECT n FROM insights WHERE id IN ({marks})", list(credit))}
            found = [v for v in rows_by_n(conn, sorted(ns)).values() if v[0].status == "active"]
        vecs = self.vectors.rows([(blob, ins.text) for ins, blob in found])
        sims = vecs @ q[0] if found else np.zeros(0)
        return [
            Candidate(insight=ins, similarity=float(sim), credit=credit.get(ins.id, []))
            for (ins, _), sim in zip(found, sims, strict=True)
        ]
