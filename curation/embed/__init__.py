"""Embedders and the embedding cache."""

from curation.embed.base import Embedder
from curation.embed.cache import EmbeddingCache, content_key
from curation.embed.hashing import HashingEmbedder
from curation.embed.sentence_transformers import SentenceTransformerEmbedder
from curation.embed.static import StaticEmbedder
from curation.embed.tabular import TabularEncoder
from curation.exceptions import InvalidParameterError

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
    * ``sentence-transformers:<name>`` or anything else: a sentence-transformers model (packaged
      name or local directory).
    * ``<family>:<argument>`` of an installed embedder plugin (entry-point group ``curation.embedders``).
    """
    family, _, argument = model.partition(":")
    family = family.lower()
    if family not in Embedder.registry:  # a model name or directory: sentence-transformers loads it
        family, argument = "sentence-transformers", ""
    cls = Embedder.registry.get(family, field="embed.model")
    try:
        return cls.from_model(model, argument or None, **kwargs)
    except (TypeError, ValueError) as exc:  # e.g. "hashing:abc", or a setting the family does not take
        raise InvalidParameterError(f"embed.model={model!r}: {exc}") from None
