"""The Embedder interface: texts (or rows) in, float32 (n, d) vectors out.

An embedder's ``id`` names the exact vector space it produces (model + settings that change the
vectors); the embedding cache is keyed by ``(content hash, id)`` so switching models or settings
never mixes vectors. Embedders are cheap to construct and to pickle (Ray ships them to actors):
heavy models are loaded lazily, once per process, and never stored on the instance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from curation.registry import Registered, Registry


class Embedder(Registered, ABC):
    """Turns a batch of texts into row-aligned float32 vectors.

    Text embedders are registered by family name (``hashing``, ``static-minilm``,
    ``sentence-transformers``); ``embed.model`` is ``family`` or ``family:argument``, and any
    other value is a sentence-transformers model (see :func:`curation.embed.make_text_embedder`).
    """

    registry: ClassVar[Registry] = Registry("embedder", "curation.embedders", builtins="curation.embed")
    #: True when embedding a text costs less than sending it to another process (a hash, a table
    #: lookup): a local flow then embeds in its own process instead of starting Ray for it.
    light: ClassVar[bool] = False
    #: True when a text's vector does not depend on the other texts of its chunk (no padding to
    #: the longest text, no batch statistics): the build then embeds missing texts in pool
    #: order, so vectors reach the output in runs, instead of sorted by length to pad little
    #: (see :func:`curation.pipeline.embed_texts`).
    batch_invariant: ClassVar[bool] = False
    #: How many chunks one process may embed at once, on threads (1: one after another). More
    #: than 1 where most of an embedding runs without Python's GIL (a Rust tokenizer, a sparse
    #: product): the next chunk's native work then overlaps this chunk's Python work and the
    #: build's own per-chunk work (see :func:`curation.pipeline.serial_map`). Vectors never
    #: depend on it: each chunk is embedded on its own.
    parallel_chunks: ClassVar[int] = 1

    @classmethod
    def from_model(cls, model: str, argument: str | None, **settings: Any) -> Embedder:
        """The embedder for ``embed.model`` (``argument`` is what follows ``family:``, if anything)."""
        raise NotImplementedError

    @property
    @abstractmethod
    def id(self) -> str:
        """A stable identifier of the vector space (used in cache keys and manifests)."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``; returns a C-contiguous float32 array of shape (len(texts), dim)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Fail fast, before any work, when the model cannot be loaded (e.g. a missing directory)."""

    def set_threads(self, n: int) -> None:  # noqa: B027 - optional hook
        """Limit the intra-op threads this process uses (for one Ray actor per core budget)."""
