"""Quad: the invariants in docs/methods/quad.md#invariants."""

from __future__ import annotations

import numpy as np
import pytest

from curation.score import QualityScorer
from curation.select import QuadSelector
from curation.types import Pool


class TableScorer(QualityScorer):
    """A deterministic scorer: item i scores values[i]."""

    def __init__(self, values):
        super().__init__()
        self.values = np.asarray(values, dtype=float)

    def _score(self, pool, indices):
        return self.values[indices]


def make_pool(K, size, d=8, seed=0):
    """K clusters with orthogonal-ish centroids (so rho-propagation is local)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(K, d))
    clusters = np.repeat(np.arange(K), size)
    X = (centers[clusters] * 10 + rng.normal(size=(K * size, d))).astype(np.float32)
    n = K * size
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=np.zeros(n, int), group_names=("*",),
                clusters=clusters)


def quad(values, **kw):
    base = {"clusters_per_round": 2, "probe": 3, "chunk": 5, "tau": 0.0, "alpha": 0.0, "rho": 0.0}
    return QuadSelector(scorer=TableScorer(values), **{**base, **kw})


def test_no_duplicates_budget_and_determinism(seed):
    pool = make_pool(6, 40)
    vals = np.random.default_rng(seed).normal(0.5, 0.3, len(pool))
    a = quad(vals, alpha=0.5, rho=0.3).select(pool, 37, rng=np.random.default_rng(seed))
    b = quad(vals, alpha=0.5, rho=0.3).select(pool, 37, rng=np.random.default_rng(seed))
    assert len(a.indices) == len(set(a.indices.tolist())) <= 37
    np.testing.assert_array_equal(a.indices, b.indices)
    # only probed items are scored
    assert a.info["scorer_calls"] == a.info["pulls"] * 3


def test_one_cluster_takes_exactly_the_chunks_whose_probe_mean_is_positive(seed):
    # probe == chunk: each chunk's reward is the exact mean of its 5 items; one cluster, one pull
    # per round, so the `round` column names each item's chunk (whatever order Quad walks in)
    pool = make_pool(1, 30)
    vals = np.random.default_rng(seed).choice([-1.0, 1.0], 30)
    sel = quad(vals, clusters_per_round=1, probe=5).select(pool, 30, rng=np.random.default_rng(seed))
    rounds = sel.columns["round"]
    assert sorted(np.bincount(rounds)[1:].tolist()) == [5] * 6  # six chunks of five, every item pulled once
    good = [r for r in range(1, 7) if vals[rounds == r].mean() > 0]
    for r in range(1, 7):
        chunk = rounds == r
        np.testing.assert_allclose(sel.columns["probe_score"][chunk], vals[chunk].mean())
        assert sel.columns["chunk_accepted"][chunk].all() == (r in good)
    # the selection is the accepted chunks, in the order they were accepted; never padded
    assert set(sel.indices.tolist()) == set(np.flatnonzero(np.isin(rounds, good)).tolist())
    assert np.all(np.diff(rounds[sel.indices]) >= 0)
    assert sel.info["accepted_chunks"] == len(good) and len(sel.indices) == 5 * len(good)


def test_known_answer_good_cluster_whole_bad_cluster_never(seed):
    # cluster 0 scores +1 everywhere, cluster 1 -1: whatever the order, the answer is cluster 0
    pool = make_pool(2, 30)
    vals = np.where(pool.clusters == 0, 1.0, -1.0)
    sel = quad(vals, clusters_per_round=1).select(pool, 30, rng=np.random.default_rng(seed))
    assert sorted(sel.indices.tolist()) == list(range(30))
    assert sel.info["accepted_chunks"] == 6
    assert sel.info["clusters_covered"] == 1


def test_alpha_zero_without_propagation_is_greedy():
    # cluster c's items all score c/10 - 0.25: clusters 0-2 negative, 3-5 positive
    pool = make_pool(6, 20)
    vals = pool.clusters / 10 - 0.25
    sel = quad(vals, clusters_per_round=1, chunk=5).select(pool, 20, rng=np.random.default_rng(0))
    hist = sel.info["history"]
    # once a positive cluster is found it keeps the top CS (its running mean) and is pulled until exhausted
    first_good = next(h for h in hist if h["accepted"])
    after = [h["cluster"] for h in hist[hist.index(first_good):]]
    assert after == [first_good["cluster"]] * 4
    # clusters with a negative mean rank below unpulled ones (CS 0): none is pulled twice
    bad = [h["cluster"] for h in hist if not h["accepted"]]
    assert len(bad) == len(set(bad))


def test_large_alpha_without_propagation_is_round_robin():
    pool = make_pool(8, 50)
    vals = np.random.default_rng(1).normal(0, 1, len(pool))
    sel = quad(vals, clusters_per_round=3, alpha=1e6).select(pool, 400, rng=np.random.default_rng(0))
    first = [h["cluster"] for h in sel.info["history"][:9]]  # ceil(8/3) = 3 rounds
    assert set(first[:8]) == set(range(8))


def test_planted_quality():
    K = 20
    pool = make_pool(K, 60)
    rng = np.random.default_rng(0)
    hi = pool.clusters % 2 == 0
    vals = np.where(hi, rng.normal(0.8, 0.05, len(pool)), rng.normal(0.2, 0.05, len(pool)))
    explore = quad(vals, tau=0.5, alpha=0.5, rho=0.2, clusters_per_round=4).select(pool, 300, rng=np.random.default_rng(0))
    greedy = quad(vals, tau=0.5, alpha=0.0, rho=0.2, clusters_per_round=4).select(pool, 300, rng=np.random.default_rng(0))
    for sel in (explore, greedy):
        assert hi[sel.indices].mean() >= 0.9
    assert explore.info["clusters_covered"] >= greedy.info["clusters_covered"]


@pytest.mark.parametrize("c,expect_all", [(0.0, False), (-1.0, False), (0.5, True)])
def test_constant_scorer_reward_sign(c, expect_all):
    pool = make_pool(4, 20)
    sel = quad(np.full(len(pool), c), tau=0.0).select(pool, 80, rng=np.random.default_rng(0))
    hist = sel.info["history"]
    if expect_all:
        assert all(h["accepted"] for h in hist) and len(sel.indices) == 80
    else:
        assert len(sel.indices) == 0 and not any(h["accepted"] for h in hist)


def test_report_columns_explain_every_item():
    pool = make_pool(4, 20)
    vals = np.where(pool.clusters < 2, 1.0, -1.0)
    sel = quad(vals).select(pool, 40, rng=np.random.default_rng(0))
    assert set(sel.columns) == {"round", "probe_score", "chunk_accepted", "ucb_mean", "ucb_bonus"}
    picked = sel.indices
    assert sel.columns["chunk_accepted"][picked].all() and (sel.columns["round"][picked] > 0).all()
    assert all("chunk accepted" in r for r in sel.reasons[picked])
    rejected = (sel.columns["round"] > 0) & ~sel.columns["chunk_accepted"]
    assert all("chunk rejected" in r for r in sel.reasons[rejected])


def labelled_pool_with_bad_clusters(seed, K=12, size=60, C=3, d=8):
    """K clusters, K/C per class; the last quarter of the clusters carry the next class's label.
    The reference set is clean: fresh draws around the class means."""
    from curation.types import Reference

    rng = np.random.default_rng(seed)
    mu = rng.normal(size=(C, d)) * 3
    cls = np.arange(K) % C
    centers = mu[cls] + rng.normal(size=(K, d))
    clusters = np.repeat(np.arange(K), size)
    X = (centers[clusters] + 0.7 * rng.normal(size=(K * size, d))).astype(np.float32)
    bad = (np.arange(K) >= K - K // 4)[clusters]
    labels = np.where(bad, (cls[clusters] + 1) % C, cls[clusters]).astype(str)
    yr = rng.integers(0, C, 200)
    ref = Reference(ids=np.arange(200).astype(str), labels=yr.astype(str),
                    embeddings=(mu[yr] + 1.2 * rng.normal(size=(200, d))).astype(np.float32))
    pool = Pool(ids=np.arange(K * size).astype(str), embeddings=X, groups=np.zeros(K * size, int), group_names=("*",),
                clusters=clusters, labels=labels, reference=ref)
    return pool, bad


@pytest.mark.parametrize("scorer", ["influence", "knn-shapley"])
def test_quad_with_a_reference_scorer_avoids_mislabelled_clusters(scorer, seed):
    """A quarter of the clusters carry wrong labels: influence / KNN-Shapley against a clean
    reference set keep Quad (greedy, tau 0) out of them, while scoring only the probes."""
    pool, bad = labelled_pool_with_bad_clusters(seed)
    sel = QuadSelector(scorer=scorer, clusters_per_round=3, probe=5, chunk=20, tau=0.0, alpha=0.0, rho=0.0).select(
        pool, 200, rng=np.random.default_rng(seed))
    assert len(sel.indices) == 200
    assert (~bad[sel.indices]).mean() >= 0.9
    assert sel.info["scorer_calls"] == sel.info["pulls"] * 5 < len(pool) / 4
    assert sel.info["scorer"]["name"] == scorer and sel.info["scorer"]["reference_rows"] == 200
