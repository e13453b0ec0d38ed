"""The static embedder distilled from the packaged MiniLM (``embed.model: static-minilm``).

Most tests distil a small slice of the vocabulary (``vocab_limit``: the first ids only), which
exercises the whole build path in a few seconds. The full model is built once per session (into a
temporary directory) for the two ``slow`` tests that need real vectors: about 10-20 s of forward
passes on a quiet 2-core machine, minutes on a busy one.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from curation.embed import EmbeddingCache, make_text_embedder
from curation.embed import static as static_mod
from curation.embed.static import DistillSettings, StaticEmbedder, default_cache_dir, ensure_distilled, token_weights
from curation.pipeline import embed_texts, serial_map

SMALL = {"vocab_limit": 1200, "pca_dims": 32}  # ids < 1200: special tokens and ~200 single characters


@pytest.fixture
def count_builds(monkeypatch):
    """Counts calls of the expensive distillation step."""
    calls: list[DistillSettings] = []
    real = static_mod.distill

    def counting(base_path, settings):
        calls.append(settings)
        return real(base_path, settings)

    monkeypatch.setattr(static_mod, "distill", counting)
    return calls


@pytest.fixture(scope="session")
def small_cache(tmp_path_factory):
    """A cache directory holding the small model (built once per test session)."""
    root = tmp_path_factory.mktemp("static-small")
    StaticEmbedder(cache_dir=root, **SMALL).model_dir  # noqa: B018 - builds it
    return root


@pytest.fixture
def fake_distill(monkeypatch):
    """Replaces the forward passes with a seeded random table (for the cache mechanics only)."""
    from tokenizers import Tokenizer

    from curation.embed.sentence_transformers import resolve_model_path

    def fake(base_path, settings):
        tok = Tokenizer.from_file(f"{resolve_model_path(settings.base)}/tokenizer.json")
        tok.no_truncation()
        rng = np.random.default_rng(0)
        return rng.standard_normal((tok.get_vocab_size(), settings.pca_dims)).astype(np.float32), tok

    monkeypatch.setattr(static_mod, "distill", fake)


@pytest.fixture(scope="session")
def full_cache():
    """The model cache that builds and the demo use, holding the full distilled model: built
    there if missing (40 s), else reused. Distillation is keyed by the base model's files and the
    settings (a test above checks it is deterministic), so a model found there is the one this
    code would build; the build test of the mechanism is the small model's."""
    root = default_cache_dir()
    StaticEmbedder(cache_dir=root).model_dir  # noqa: B018 - builds it if missing
    return root


def test_distillation_is_deterministic(small_cache, tmp_path):
    """Same base files and settings -> byte-identical table and tokenizer -> same hash."""
    small_model_dir = StaticEmbedder(cache_dir=small_cache, **SMALL).model_dir
    again = ensure_distilled(DistillSettings(**SMALL), tmp_path)
    assert again != small_model_dir
    for name in ("model.safetensors", "tokenizer.json"):
        assert (again / name).read_bytes() == (small_model_dir / name).read_bytes()
    a, b = (json.loads((d / "distill.json").read_text()) for d in (small_model_dir, again))
    assert a["sha256"] == b["sha256"] and a["key"] == b["key"]
    assert not list(tmp_path.glob(".tmp-*"))  # the temporary build directory was renamed away


def test_cache_is_reused_and_keyed_by_settings(small_cache, tmp_path, count_builds):
    emb = StaticEmbedder(cache_dir=small_cache, **SMALL)
    assert emb.embed(["hello"]).shape == (1, 32) and emb.id.startswith("static:minilm@")
    assert count_builds == []  # built once per machine (cache directory), not per embedder or process
    settings = DistillSettings(**SMALL)
    base_sha = static_mod.base_model_sha256(static_mod.resolve_model_path(settings.base))
    keys = {static_mod.distill_key(base_sha, DistillSettings(**{**SMALL, **change}))
            for change in ({}, {"weighting": "none"}, {"pca_dims": 16}, {"vocab_limit": None}, {"sif_coefficient": 1})}
    assert len(keys) == 5  # any setting that changes the table changes the key


def test_first_use_builds_once_then_reuses(tmp_path, fake_distill, count_builds):  # count the fake
    a = StaticEmbedder(cache_dir=tmp_path, pca_dims=8)
    assert a.id == StaticEmbedder(cache_dir=tmp_path, pca_dims=8).id
    assert StaticEmbedder(cache_dir=tmp_path, pca_dims=8).embed(["x y"]).shape == (1, 8)
    assert len(count_builds) == 1
    assert (tmp_path / "static-minilm").is_dir() and a.model_dir.parent == tmp_path / "static-minilm"


def test_id_names_the_distilled_hash_and_vector_settings(small_cache):
    tmp_path = small_cache
    emb = StaticEmbedder(cache_dir=tmp_path, **SMALL)
    sha = json.loads((emb.model_dir / "distill.json").read_text())["sha256"]
    assert emb.model_sha256 == sha and emb.id.startswith(f"static:minilm@{sha[:16]}:dim=32")
    assert StaticEmbedder(cache_dir=tmp_path, max_seq_length=8, **SMALL).id != emb.id
    assert StaticEmbedder(cache_dir=tmp_path, normalize=False, **SMALL).id != emb.id


def test_a_build_that_dies_leaves_nothing(tmp_path, monkeypatch, fake_distill):
    def boom(*_):
        raise KeyboardInterrupt  # after write_model has written the table and tokenizer

    monkeypatch.setattr(static_mod, "content_sha256", boom)
    with pytest.raises(KeyboardInterrupt):
        ensure_distilled(DistillSettings(pca_dims=8), tmp_path)
    # the lock and the base model's hash memo stay; no part of a model does
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")] == ["base-sha256.json"]


def test_pickles_small_and_loads_lazily(small_cache):
    """What Ray ships: no model inside, the same id and vectors on the other side."""
    emb = StaticEmbedder(cache_dir=small_cache, **SMALL)
    emb_id = emb.id
    blob = pickle.dumps(emb)
    assert len(blob) < 2000
    other = pickle.loads(blob)
    assert other.id == emb_id
    np.testing.assert_array_equal(other.embed(["a, b; c!"]), emb.embed(["a, b; c!"]))


def test_model_directory_is_a_plain_sentence_transformers_model(small_cache):
    """Its vectors are what sentence-transformers' StaticEmbedding computes from the directory,
    truncated or not, to the last float bits of a different summation order."""
    from sentence_transformers import SentenceTransformer

    emb = StaticEmbedder(cache_dir=small_cache, **SMALL)
    plain = SentenceTransformer(str(emb.model_dir), device="cpu")
    texts = ["a, b; c!", "[UNK] ?", "", "x y z, w; v. u! t? s: r"]
    np.testing.assert_allclose(plain.encode(texts, normalize_embeddings=True), emb.embed(texts), atol=1e-6)
    from safetensors.numpy import load_file
    from tokenizers import Tokenizer

    truncating = static_mod.as_sentence_transformer(  # StaticEmbedding over the same files, 3 tokens
        Tokenizer.from_file(str(emb.model_dir / "tokenizer.json")),
        load_file(str(emb.model_dir / "model.safetensors"))["embedding.weight"], max_seq_length=3)
    short = StaticEmbedder(cache_dir=small_cache, max_seq_length=3, **SMALL)
    np.testing.assert_allclose(truncating.encode(texts, normalize_embeddings=True), short.embed(texts), atol=1e-6)
    assert not np.allclose(short.embed(texts[3:]), emb.embed(texts[3:]))  # truncation did cut the text
    raw = StaticEmbedder(cache_dir=small_cache, normalize=False, batch_size=2, **SMALL)
    np.testing.assert_allclose(SentenceTransformer(str(emb.model_dir), device="cpu").encode(texts), raw.embed(texts),
                               atol=1e-6)


def test_embedding_imports_neither_torch_nor_sentence_transformers(small_cache):
    """A built model embeds with tokenizers and a sparse product: the driver of a static-minilm
    build never pays for torch's import and memory."""
    import subprocess
    import sys

    code = ("import sys; from curation.embed.static import StaticEmbedder; "
            f"e = StaticEmbedder(cache_dir={str(small_cache)!r}, vocab_limit=1200, pca_dims=32); "
            "assert e.embed(['hello there', '']).shape == (2, 32); "
            "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


def test_refuses_a_different_model_than_its_id_names(small_cache):
    emb = StaticEmbedder(cache_dir=small_cache, **SMALL)
    _ = emb.id
    emb._sha = "0" * 64  # as if the driver's model differed from this node's
    with pytest.raises(RuntimeError, match="is not the one this embedder's id names"):
        emb.embed(["x"])


def test_factory_takes_the_recipe_settings(tmp_path):
    emb = make_text_embedder("static-minilm", batch_size=64, normalize=True, max_seq_length=None,
                             cache_dir=str(tmp_path))
    assert isinstance(emb, StaticEmbedder) and emb.batch_size == 64 and emb.settings.pca_dims == 256
    emb = make_text_embedder("static-minilm:128", batch_size=64, normalize=False, max_seq_length=64)
    assert emb.settings.pca_dims == 128 and not emb.normalize and emb.max_seq_length == 64


def test_sif_weights_damp_frequent_ids():
    w = token_weights(30522, "sif", 1e-3)
    assert w[0] < 0.05 and w[1996] > 0.9 and np.all(np.diff(w) > 0)
    assert token_weights(10, "none").tolist() == [1.0] * 10


@pytest.mark.slow
def test_full_model_vectors(full_cache, tmp_path):
    """Configured dimension, unit norm, batch-independent, and the embedding cache round trip."""
    emb = make_text_embedder("static-minilm", batch_size=64, normalize=True, max_seq_length=None,
                             cache_dir=str(full_cache))
    texts = ["A man is playing a guitar.", "Someone plays the guitar.", "The stock market fell sharply today.", ""]
    X = emb.embed(texts)
    assert X.shape == (4, 256) and X.dtype == np.float32 and X.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(X[:3], axis=1), 1, rtol=1e-5)
    assert not X[3].any()  # no tokens: the zero vector
    np.testing.assert_allclose(emb.embed(texts[1:2])[0], X[1], atol=1e-6)
    cache = EmbeddingCache(tmp_path / "vectors", emb.id)
    X1, _ = embed_texts(texts[:3], emb, cache=cache, map_chunks=serial_map(emb))
    X2, counts = embed_texts(texts[:3], emb, cache=cache, map_chunks=serial_map(emb))
    assert counts["embedded"] == 0
    np.testing.assert_array_equal(X1, X2)


def test_two_chunks_at_once_give_the_vectors_of_one_after_another(small_cache):
    """The static embedder embeds two chunks at once in a build (``parallel_chunks``); its
    tokenizer and table are shared by the threads, and the vectors are bit for bit the serial ones."""
    emb = StaticEmbedder(cache_dir=small_cache, **SMALL)
    assert emb.parallel_chunks == 2
    texts = [f"sample {i} " + "abc " * (i % 9) for i in range(3000)]
    chunks = [texts[s : s + 64] for s in range(0, len(texts), 64)]
    serial = np.concatenate([emb.embed(c) for c in chunks])
    threaded = np.concatenate(list(serial_map(emb)(chunks)))
    np.testing.assert_array_equal(threaded, serial)
    X, counts = embed_texts(texts, emb, cache=None, map_chunks=serial_map(emb), chunk_size=64)
    assert counts["embedded"] == 3000 and np.array_equal(X, serial)


@pytest.mark.slow
def test_full_model_nearest_neighbours_are_paraphrases(full_cache):
    emb = StaticEmbedder(cache_dir=full_cache)
    pairs = [
        ("A man is playing a guitar.", "Someone plays the guitar."),
        ("The stock market fell sharply today.", "Share prices dropped steeply on Wall Street."),
        ("How do I bake bread at home?", "A simple recipe for homemade bread."),
        ("The cat is sleeping on the sofa.", "A kitten naps on the couch."),
    ]
    X = emb.embed([t for pair in pairs for t in pair])
    S = X @ X.T
    np.fill_diagonal(S, -1)
    assert S.argmax(axis=1).tolist() == [1, 0, 3, 2, 5, 4, 7, 6]  # each sentence's nearest is its paraphrase
    truncated = StaticEmbedder(cache_dir=full_cache, max_seq_length=2).embed(["the cat sat on the mat"])
    np.testing.assert_allclose(truncated, emb.embed(["the cat"]), atol=1e-6)


def test_base_hash_is_remembered_by_file_stats_and_redone_when_a_file_changes(tmp_path, monkeypatch):
    """The base model's hash is read from the memo while its files' sizes and times are unchanged,
    and recomputed (the same bytes: the same hash; new bytes: a new one) when they change."""
    base = tmp_path / "base"
    base.mkdir()
    (base / "a.bin").write_bytes(b"weights")
    (base / "config.json").write_text("{}")
    memo = tmp_path / "memo"
    first = static_mod.base_model_sha256.__wrapped__(str(base), str(memo))
    assert first == static_mod.base_model_sha256.__wrapped__(str(base))  # the memo changes nothing
    assert (memo / "base-sha256.json").is_file() and not list(memo.glob(".*"))

    reads = []
    real = static_mod._file_sha256
    monkeypatch.setattr(static_mod, "_file_sha256", lambda p: reads.append(p) or real(p))
    assert static_mod.base_model_sha256.__wrapped__(str(base), str(memo)) == first and reads == []
    os.utime(base / "a.bin", ns=(1, 1))  # touched: read again, the same bytes give the same hash
    assert static_mod.base_model_sha256.__wrapped__(str(base), str(memo)) == first and len(reads) == 2
    (base / "a.bin").write_bytes(b"other weights")
    assert static_mod.base_model_sha256.__wrapped__(str(base), str(memo)) != first
