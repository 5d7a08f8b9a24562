"""Text embedders: the `Embedder` protocol, sentence-transformers (MiniLM by default, loaded by path),
and a model-free feature-hashing embedder.

Every embedder returns float32 rows of unit L2 norm, so an inner product is a cosine similarity.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
from insightloop.core.models import resolve_embedder

HASHING = "hashing"


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to vectors.

    Contract: `encode(texts)` returns a float32 array of shape (len(texts), dim) whose rows have
    unit L2 norm (a text with no features may give a zero row); the same text always gives the
    same row. An optional `name` attribute labels the model in the store's records.
    """

    @property
    def dim(self) -> int: ...

    def encode(self, texts: list[str]) -> np.ndarray: ...


def normalize_rows(vecs: np.ndarray) -> np.ndarray:
    vecs = np.asarray(vecs, dtype=np.float32)
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.maximum(norms, 1e-12)


def _model_name(path_or_name: str) -> str:
    path = Path(path_or_name)
    # A model shipped inside a wheel sits in `<package>/model`: the package names it better.
    if path.name == "model" and path.parent.name:
        return path.parent.name
    return path.name or path_or_name


class SentenceTransformerEmbedder:
    """A sentence-transformers model, loaded on first use, batched, with an LRU cache of vectors.

    Loading is lazy so that commands which never embed (listing, diffing) stay fast.
    """

    def __init__(
        self,
        model_path_or_name: str,
        device: str = "cpu",
        batch_size: int = 64,
        cache_size: int = 8192,
        name: str | None = None,
    ) -> None:
        self.path = model_path_or_name
        self.device = device
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.name = name or _model_name(model_path_or_name)
        self._model: Any = None
        self._dim: int | None = None
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _load(self) -> Any:
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            device = self.device
            if device == "auto":
                import torch

                device = "cuda" if torch.cuda.is_available() else "cpu"
            self._model = SentenceTransformer(self.path, device=device)
        return self._model

    @property
    def dim(self) -> int:
        if self._dim is None:
            model = self._load()
            getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            self._dim = int(getter())
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            if missing:
                vecs = self._load().encode(
                    missing,
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                for text, vec in zip(missing, normalize_rows(vecs), strict=True):
                    self._cache[text] = vec
            out = np.empty((len(texts), self.dim), dtype=np.float32)
            for i, text in enumerate(texts):
                out[i] = self._cache[text]
                self._cache.move_to_end(text)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
            return out


_TOKEN = re.compile(r"[a-z0-9]+")


class HashingEmbedder:
    """Feature hashing of words and word bigrams into `dim` signed buckets (no model, no network).

    Similarity here is lexical overlap, not meaning: useful for tests and tiny machines.
    """

    def __init__(self, dim: int = 256) -> None:
        self._dim = dim
        self.name = f"{HASHING}-{dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def _bucket(self, feature: str) -> tuple[int, float]:
        digest = hashlib.blake2b(feature.encode("utf-8"), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        return value % self._dim, (1.0 if (value >> 63) & 1 else -1.0)

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = _TOKEN.findall(text.lower())
            for feature in words + [a + " " + b for a, b in zip(words, words[1:], strict=False)]:
                j, sign = self._bucket(feature)
                out[i, j] += sign
        return normalize_rows(out)


def make_embedder(spec: str, device: str = "cpu") -> Embedder:
    """`embedded` → the bundled MiniLM; `hashing` or `hashing-<dim>` → `HashingEmbedder`;
    anything else → a sentence-transformers model path or cached hub id."""
    if spec == HASHING or spec.startswith(HASHING + "-"):
        dim = int(spec.split("-", 1)[1]) if "-" in spec else 256
        return HashingEmbedder(dim)
    return SentenceTransformerEmbedder(resolve_embedder(spec), device=device)
