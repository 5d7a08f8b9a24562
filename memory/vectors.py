"""`Vectors`: texts to vectors for every part of a memory, and when stored vectors may be reused.

Insights, training tasks and attempts keep their vector beside their text in SQLite. A stored vector
is used only if it came from the embedder in use (same dimension, same vector for a fixed probe
text): when the model changed, a writer re-embeds every stored text once; a reader, which cannot
write, embeds texts in memory instead.
"""

from __future__ import annotations

import uuid

import numpy as np
from insightloop.memory import db
from insightloop.memory.embed import Embedder
from insightloop.memory.session import Session

_PROBE = "insightloop embedder probe: count the vowels before answering."
_EMBEDDER_KEY = "_embedder"
# The tables with stored vectors, and the column each vector embeds.
_EMBEDDED = (("insights", "text"), ("tasks", "text"), ("attempts", "task_text"))


class Vectors:
    """The embedder of one open memory and the stored vectors it may reuse."""

    def __init__(self, session: Session, embedder: Embedder) -> None:
        self.session = session
        self.embedder = embedder
        self.stored_ok = True
        # Names the embedder the stored vectors came from; stamped on index.faiss.
        self.token: str | None = None

    @property
    def dim(self) -> int:
        return self.embedder.dim

    def embed(self, texts: list[str]) -> np.ndarray:
        """One float32 row per text (no call to the model for an empty list)."""
        if not texts:
            return np.zeros((0, self.embedder.dim), dtype=np.float32)
        return np.asarray(self.embedder.encode(texts), dtype=np.float32).reshape(len(texts), -1)

    def one(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def rows(self, rows: list[tuple[bytes | None, str]]) -> np.ndarray:
        """(stored vector, text) rows as vectors: stored ones where valid, the texts of the rest
        embedded in one batch."""
        dim = self.embedder.dim
        out = np.zeros((len(rows), dim), dtype=np.float32)
        missing = []
        for i, (blob, _) in enumerate(rows):
            vec = db.blob_vec(blob, dim) if self.stored_ok else None
            if vec is None:
                missing.append(i)
            else:
                out[i] = vec
        if missing:
            out[missing] = self.embed([rows[i][1] for i in missing])
        return out

    def check(self) -> None:
        """Decide whether stored vectors came from this embedder (see the module docstring)."""
        probe = self.one(_PROBE)
        stored = self.session.kv_get(_EMBEDDER_KEY)
        same = (
            stored is not None
            and stored.get("dim") == len(probe)
            and float(np.dot(np.asarray(stored["probe"], dtype=np.float32), probe)) >= 0.999
        )
        if same:
            self.token = stored.get("token")
            return
        if self.session.readonly:
            self.stored_ok = stored is None
            return
        self.stored_ok = False
        self._reembed_all()
        self.stored_ok = True
        # A new token invalidates any index.faiss built from the previous model's vectors.
        self.token = uuid.uuid4().hex
        name = getattr(self.embedder, "name", type(self.embedder).__name__)
        self.session.kv_set(
            _EMBEDDER_KEY, {"dim": len(probe), "probe": probe.tolist(), "name": name, "token": self.token}
        )

    def _reembed_all(self) -> None:
        for table, text_col in _EMBEDDED:
            with self.session.read() as conn:
                rows = conn.execute(f"SELECT n, {text_col} FROM {table}").fetchall()
            if not rows:
                continue
            vecs = self.embed([r[1] for r in rows])
            with self.session.untracked() as conn:
                conn.executemany(
                    f"UPDATE {table} SET embedding = ? WHERE n = ?",
                    [(db.vec_blob(v), r[0]) for r, v in zip(rows, vecs, strict=True)],
                )
