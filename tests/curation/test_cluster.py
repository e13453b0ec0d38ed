"""faiss k-means: known answers, reference equivalence, seeds, errors."""

from __future__ import annotations

import numpy as np
import pytest

from curation.cluster import FaissKMeans
from curation.exceptions import DataError


def test_two_obvious_clusters(seed):
    X = np.array([[0, 0], [0, 1], [1, 0], [10, 10], [10, 11], [11, 10]], np.float32)
    km = FaissKMeans(2).fit(X, rng=np.random.default_rng(seed))
    assert len(set(km.labels_[:3])) == 1 and len(set(km.labels_[3:])) == 1 and km.labels_[0] != km.labels_[3]
    centroids = sorted(km.centroids_.tolist())
    np.testing.assert_allclose(centroids, [[1 / 3, 1 / 3], [31 / 3, 31 / 3]], rtol=1e-5)


def numpy_lloyd(X: np.ndarray, centroids: np.ndarray, niter: int) -> tuple[np.ndarray, np.ndarray]:
    """Textbook Lloyd's k-means in float64: ``niter`` rounds of (assign to the nearest centroid,
    move each centroid to its members' mean), then the final assignment."""
    X, C = X.astype(np.float64), centroids.astype(np.float64)
    for _ in range(niter):
        labels = ((X[:, None] - C[None]) ** 2).sum(-1).argmin(1)
        C = np.stack([X[labels == j].mean(0) for j in range(len(C))])
    return ((X[:, None] - C[None]) ** 2).sum(-1).argmin(1), C


@pytest.mark.parametrize("niter", [3, 10])
def test_matches_a_numpy_lloyd_reference_from_the_same_start(monkeypatch, niter):
    import curation.cluster.faiss_kmeans as fk

    # overlapping blobs: Lloyd is far from converged after a few rounds, so every round counts
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1.5, (150, 4)) for c in (0, 2.5, 5, 7.5)]).astype(np.float32)
    starts = []
    seeding = fk.kmeans_plusplus
    monkeypatch.setattr(fk, "kmeans_plusplus", lambda *a, **kw: starts.append(seeding(*a, **kw)) or starts[-1])
    km = FaissKMeans(4, niter=niter).fit(X, rng=np.random.default_rng(1))
    assert len(starts) == 1  # one k-means++ start (nredo=1): the reference starts from it too
    labels, centroids = numpy_lloyd(X, starts[0], niter)
    np.testing.assert_array_equal(km.labels_, labels)
    np.testing.assert_allclose(km.centroids_, centroids, atol=1e-4)
    # the comparison can tell: one round fewer gives other centroids and labels
    fewer_labels, fewer = numpy_lloyd(X, starts[0], niter - 1)
    assert (fewer_labels != labels).any() and np.abs(fewer - centroids).max() > 1e-2


def test_same_seed_same_clusters_and_sampled_fit():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 8)).astype(np.float32)
    a = FaissKMeans(10, max_points_per_centroid=50).fit(X, rng=np.random.default_rng(3))  # fits on 500 points
    b = FaissKMeans(10, max_points_per_centroid=50).fit(X, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.labels_, b.labels_)
    assert len(a.labels_) == 5000 and set(a.labels_) == set(range(10))  # every point assigned


def test_spherical_on_unit_vectors():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    km = FaissKMeans(4, spherical=True).fit(X, rng=np.random.default_rng(0))
    np.testing.assert_allclose(np.linalg.norm(km.centroids_, axis=1), 1, rtol=1e-4)
    np.testing.assert_array_equal(km.labels_, (X @ km.centroids_.T).argmax(1))


def test_k_larger_than_pool_is_a_clear_error():
    with pytest.raises(DataError, match=r"cluster\.k=10 is larger than the pool \(3 items\)\. Set cluster\.k to at most 3"):
        FaissKMeans(10).fit(np.zeros((3, 2), np.float32), rng=np.random.default_rng(0))


def test_silhouette_and_choose_k_find_the_planted_k():
    from curation.cluster import choose_k, silhouette

    rng = np.random.default_rng(0)
    centers = rng.normal(0, 20, (6, 5))
    X = np.concatenate([c + rng.normal(0, 1, (150, 5)) for c in centers]).astype(np.float32)
    truth = np.repeat(np.arange(6), 150)
    assert silhouette(X, truth, rng=np.random.default_rng(0)) > 0.8
    assert silhouette(X, rng.integers(0, 6, len(X)), rng=np.random.default_rng(0)) < 0.05
    k, scores = choose_k(X, [2, 4, 6, 9, 12], rng=np.random.default_rng(1), spherical=False)
    assert k == 6 and set(scores) == {2, 4, 6, 9, 12}


def test_a_non_finite_vector_is_one_clear_error_naming_its_row():
    X = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    X[137, 2] = np.nan
    with pytest.raises(DataError, match=r"row 137 is not finite"):
        FaissKMeans(3).fit(X, rng=np.random.default_rng(0))
    X[137, 2], X[5, 0] = 0.0, np.inf
    with pytest.raises(DataError, match=r"row 5 is not finite"):
        FaissKMeans(3, init="random").fit(X, rng=np.random.default_rng(0))


def test_the_fit_sample_gathered_block_by_block_is_faiss_own_subsample(tmp_path):
    """A large pool is fitted on the rows faiss itself would sample, read without leaving the
    memory-mapped pool resident: the centroids equal faiss's own subsampled fit, bit for bit."""
    import faiss

    from curation.random import int_seed

    X = np.random.default_rng(3).normal(size=(40_000, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    ours = FaissKMeans(6, niter=8, init="random", max_points_per_centroid=64).fit(mapped, rng=np.random.default_rng(5))
    ref = faiss.Kmeans(8, 6, niter=8, seed=int_seed(np.random.default_rng(5)), max_points_per_centroid=64)
    ref.cp.min_points_per_centroid = 1
    ref.train(X)  # faiss subsamples 6 * 64 of the 40,000 rows itself
    np.testing.assert_array_equal(ours.centroids_, ref.centroids)
    again = FaissKMeans(6, niter=8, init="random", max_points_per_centroid=64).fit(X, rng=np.random.default_rng(5))
    np.testing.assert_array_equal(again.labels_, ours.labels_)  # memory-mapped or not: the same labels


@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_silhouette_score_equals_scikit_learns(metric):
    from sklearn.metrics import silhouette_score as sk_silhouette

    from curation.cluster.silhouette import silhouette_score

    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(loc=c, size=(40, 5)) for c in (0, 3, -3)]).astype(np.float32)
    labels = np.repeat(["b", "a", "c"], 40)
    labels[7] = "lonely"  # a cluster of one point scores 0
    X[11] = 0  # a zero row (cosine: distance 1 to everything)
    for lab in (labels, rng.integers(0, 4, len(X))):
        assert silhouette_score(X, lab, metric) == pytest.approx(sk_silhouette(X, lab, metric=metric), abs=1e-6)  # sklearn: float32 maths


@pytest.mark.parametrize("spherical", [False, True])
def test_assignment_spread_by_a_map_fn_gets_blocks_lazily_and_equals_one_process(spherical):
    import inspect

    rng = np.random.default_rng(4)
    X = rng.normal(size=(1_000, 16)).astype(np.float32)
    if spherical:
        X /= np.linalg.norm(X, axis=1, keepdims=True)
    calls = []

    def map_fn(func, args):
        calls.append(inspect.isgenerator(args))  # lazily: a bounded map holds only blocks in flight
        return [func(a) for a in args]

    km = FaissKMeans(8, spherical=spherical).fit(X, rng=np.random.default_rng(0))
    spread = km.assign(X, chunk=128, map_fn=map_fn)
    assert calls == [True]
    np.testing.assert_array_equal(spread, km.assign(X, chunk=128))
    np.testing.assert_array_equal(spread, km.labels_)  # the default blocks give the same labels
    np.testing.assert_array_equal(km.assign(X[:100], chunk=128, map_fn=map_fn), km.labels_[:100])
    assert calls == [True]  # a pool of one block is assigned here, not sent
