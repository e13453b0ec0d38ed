"""Embedders and the embedding cache."""

from curation.embed.base import Embedder
from curation.embed.cache import EmbeddingCache, content_key
from curation.embed.hashing import HashingEmbedder
from curation.embed.sentence_transformers import SentenceTransformerEmbedder
from curation.embed.static import StaticEmbedder
from curation.embed.tabular import TabularEncoder

__all__ = [
    "Embedder",
    "EmbeddingCache",
    "HashingEmbedder",
    "SentenceTransformerEmbedder",
    "StaticEmbedder",
    "TabularEncoder",
    "content_key",
    "make_text_embedder",
]


def make_text_embedder(model: str, **kwargs) -> Embedder:
    """The text embedder for a recipe's ``embed.model``.

    * ``hashing`` / ``hashing:<dim>``: dependency-free character trigrams (tests, dry runs);
      other keyword arguments are ignored.
    * ``static-minilm`` / ``static-minilm:<dims>``: token vectors distilled from the packaged
      MiniLM on first use (:class:`StaticEmbedder`); takes ``batch_size``, ``normalize``,
      ``max_seq_length`` and ``cache_dir`` (where distilled models are kept).
    * anything else: a sentence-transformers model (packaged name or local directory).
    """
    if model.startswith("hashing"):
        dim = int(model.split(":", 1)[1]) if ":" in model else 64
        return HashingEmbedder(dim=dim)
    if model.split(":", 1)[0].lower() == "static-minilm":
        if ":" in model:
            kwargs["pca_dims"] = int(model.split(":", 1)[1])
        kwargs = {k: v for k, v in kwargs.items() if v is not None or k == "max_seq_length"}
        return StaticEmbedder(**kwargs)
    kwargs.pop("cache_dir", None)
    return SentenceTransformerEmbedder(model, **kwargs)
