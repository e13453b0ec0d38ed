"""Embedders and the embedding cache (the real packaged MiniLM included)."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curation.embed import EmbeddingCache, HashingEmbedder, SentenceTransformerEmbedder, TabularEncoder
from curation.exceptions import DataError
from curation.pipeline import embed_texts, serial_map


class CountingEmbedder(HashingEmbedder):
    def __init__(self):
        super().__init__(dim=16)
        self.seen: list[str] = []

    def embed(self, texts):
        self.seen.extend(texts)
        return super().embed(texts)


def test_hashing_embedder_is_deterministic_and_normalised():
    X = HashingEmbedder(dim=32).embed(["hello world", "hello world", "something else"])
    assert X.shape == (3, 32) and X.dtype == np.float32
    np.testing.assert_array_equal(X[0], X[1])
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-5)


def test_cache_round_trip_and_rerun_embeds_nothing(tmp_path):
    texts = ["a b c", "d e f", "a b c", "g h i"]
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path, emb.id)
    X1, c1 = embed_texts(texts, emb, cache=cache, map_chunks=serial_map(emb), chunk_size=2)
    assert c1 == {"texts": 4, "cached": 0, "embedded": 3}  # the duplicate text is embedded once
    assert sorted(emb.seen) == ["a b c", "d e f", "g h i"]
    emb.seen.clear()
    X2, c2 = embed_texts(texts, emb, cache=cache, map_chunks=serial_map(emb))
    assert c2 == {"texts": 4, "cached": 4, "embedded": 0} and emb.seen == []
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(X1, emb.embed(texts))
    assert len(cache) == 3


def test_cache_is_keyed_by_embedder_id(tmp_path):
    a, b = HashingEmbedder(dim=8), HashingEmbedder(dim=16)
    embed_texts(["x y"], a, cache=EmbeddingCache(tmp_path, a.id), map_chunks=serial_map(a))
    found, _ = EmbeddingCache(tmp_path, b.id).get(["x y"])
    assert not found.any()  # another model never sees these vectors


def test_partial_cache_embeds_only_new_texts(tmp_path):
    emb = CountingEmbedder()
    cache = EmbeddingCache(tmp_path, emb.id)
    embed_texts(["one", "two"], emb, cache=cache, map_chunks=serial_map(emb))
    emb.seen.clear()
    X, counts = embed_texts(["two", "three", "one"], emb, cache=cache, map_chunks=serial_map(emb))
    assert emb.seen == ["three"] and counts["cached"] == 2
    np.testing.assert_array_equal(X, HashingEmbedder(16).embed(["two", "three", "one"]))


def test_chunked_equals_one_shot():
    emb = HashingEmbedder(dim=16)
    texts = [f"text number {i} " * (i % 7 + 1) for i in range(50)]
    X1, _ = embed_texts(texts, emb, cache=None, map_chunks=serial_map(emb), chunk_size=7)
    np.testing.assert_array_equal(X1, emb.embed(texts))


def test_tabular_encoder_standardises_and_one_hots():
    df = pl.DataFrame({"age": [20.0, 40.0, None], "city": ["b", "a", None]})
    enc = TabularEncoder(["age", "city"]).fit(df)
    X = enc.transform(df)
    assert X.shape == (3, 4) and enc.dim == 4  # age + {<null>, a, b}
    np.testing.assert_allclose(X[:, 0], [-1, 1, 0])  # mean 30, std 10; missing -> mean
    np.testing.assert_array_equal(X[:, 1:], [[0, 0, 1], [0, 1, 0], [1, 0, 0]])
    assert enc.id == TabularEncoder(["age", "city"]).fit(df).id


def test_tabular_encoder_errors():
    with pytest.raises(DataError, match=r"feature column 'zip' is not in the source\. Available columns: age"):
        TabularEncoder(["zip"]).fit(pl.DataFrame({"age": [1]}))
    with pytest.raises(DataError, match=r"has 300 distinct values"):
        TabularEncoder(["name"]).fit(pl.DataFrame({"name": [str(i) for i in range(300)]}))


def test_unknown_model_is_never_downloaded():
    with pytest.raises(FileNotFoundError, match=r"Models are never downloaded at run time"):
        _ = SentenceTransformerEmbedder("bert-base-uncased").id


def test_real_minilm_embeds_meaningfully(evals):
    """The packaged model, offline: 384-d unit vectors; paraphrases closer than unrelated text."""
    emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2")
    X = emb.embed(["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today."])
    assert X.shape == (3, 384) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1, rtol=1e-4)
    assert X[0] @ X[1] > 0.6 > X[0] @ X[2]
    assert emb.id.startswith("st:all-MiniLM-L6-v2@") and "norm=1" in emb.id
    # same texts in a different batch composition: same vectors (to float tolerance)
    texts = evals["text"].head(6).to_list()
    np.testing.assert_allclose(emb.embed(texts)[2], emb.embed(texts[2:3])[0], atol=1e-5)
