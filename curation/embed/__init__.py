"""Embedders and the embedding cache."""

from curation.embed.base import Embedder
from curation.embed.cache import EmbeddingCache, content_key
from curation.embed.hashing import HashingEmbedder
from curation.embed.sentence_transformers import SentenceTransformerEmbedder
from curation.embed.tabular import TabularEncoder

__all__ = [
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "TabularEncoder",
    "content_key",
    "make_text_embedder",
]


def make_text_embedder(model: str, **kwargs) -> Embedder:
    """The text embedder for a recipe's ``embed.model`` (``hashing`` is the dependency-free one)."""
    if model.startswith("hashing"):
        dim = int(model.split(":", 1)[1]) if ":" in model else 64
        return HashingEmbedder(dim=dim)
    return SentenceTransformerEmbedder(model, **kwargs)
