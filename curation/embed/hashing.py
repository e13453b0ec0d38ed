"""A deterministic, dependency-free embedder for fast unit tests and dry runs.

Each text becomes a bag of hashed character trigrams, projected to ``dim`` buckets and
L2-normalised. Similar strings get similar vectors, so clustering on it is meaningful enough
for tests; it is not a semantic model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from curation.embed.base import Embedder


class HashingEmbedder(Embedder, name="hashing"):
    """Character-trigram hashing into ``dim`` buckets (no model, no download).

    >>> HashingEmbedder(dim=8).embed(["abc", "abc"]).tolist()[0] == HashingEmbedder(dim=8).embed(["abc"]).tolist()[0]
    True
    """

    light = True  # trigram hashing: cheaper than shipping the text to a Ray actor
    batch_invariant = True  # each text on its own: no padding, nothing shared within a chunk

    @classmethod
    def from_model(cls, model: str, argument: str | None, **settings) -> HashingEmbedder:
        return cls(dim=int(argument) if argument else 64)  # the text settings do not apply

    def __init__(self, dim: int = 64) -> None:
        self.dim = dim

    @property
    def id(self) -> str:
        return f"hashing:dim={self.dim}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        X = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            s = f"  {t.lower()}  "
            for j in range(len(s) - 2):
                h = int.from_bytes(hashlib.blake2b(s[j : j + 3].encode(), digest_size=4).digest(), "little")
                X[i, h % self.dim] += 1.0 if (h >> 31) & 1 else -1.0
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        return np.ascontiguousarray(X / np.maximum(norms, 1e-12), dtype=np.float32)
