"""kMQ and iterative kMQ: the invariants in docs/methods/kmq.md#invariants."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curation.exceptions import DataError, InvalidParameterError
from curation.select import IterativeKMQSelector, KMQSelector, build_selector
from curation.types import Pool


def make_pool(sizes, quality=None, labels=None, d=4, seed=0) -> Pool:
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    n = len(clusters)
    X = (rng.normal(size=(n, d)) + clusters[:, None] * 5).astype(np.float32)
    texts = None if quality is None else np.array(["x" * int(v) for v in quality], dtype=object)
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=np.zeros(n, int), group_names=("*",),
                clusters=clusters, labels=labels, texts=texts)


def per_cluster(pool, sel):
    return np.bincount(pool.clusters[sel.indices], minlength=pool.clusters.max() + 1).tolist()


def test_cluster_budgets_are_proportional_and_exact(seed):
    pool = make_pool([50, 30, 20])
    sel = KMQSelector().select(pool, 10, rng=np.random.default_rng(seed))
    assert per_cluster(pool, sel) == [5, 3, 2]
    sel = KMQSelector(cluster_budget="equal").select(pool, 9, rng=np.random.default_rng(seed))
    assert per_cluster(pool, sel) == [3, 3, 3]


def test_kmq_reasons_are_made_per_block_and_agree_however_they_are_asked_for():
    pool = make_pool([50, 30, 20], quality=np.arange(100) % 7 + 1)
    sel = KMQSelector(quality="length").select(pool, 10, rng=np.random.default_rng(0))
    whole = sel.reasons[:]
    assert len(sel.reasons) == len(whole) == 100
    assert pl.concat([sel.reasons[s:s + 7] for s in range(0, 100, 7)]).equals(whole)  # report blocks
    assert sel.reasons[np.array([5, 0, 99])].to_list() == [whole[5], whole[0], whole[99]]
    assert sel.reasons[-1] == whole[99] and list(sel.reasons) == whole.to_list()
    chosen = sel.mask(100)
    assert all(r.startswith("kmq: drawn from cluster") for r in sel.reasons[chosen])
    assert all(r.startswith("kmq: not drawn") for r in sel.reasons[~chosen])
    # the numbers in a reason are the row's own: its cluster, that cluster's quota and size, its quality
    i = int(sel.indices[0])
    c = int(pool.clusters[i])
    quota = int(np.bincount(pool.clusters[sel.indices], minlength=3)[c])
    assert whole[i] == (f"kmq: drawn from cluster {c} (quota {quota} of {[50, 30, 20][c]}, "
                        f"quality {sel.columns['quality'][i]:.3g}, p ∝ exp(q/1))")


def test_small_cluster_shortfall_is_redistributed(seed):
    pool = make_pool([100, 100, 2])
    sel = KMQSelector(cluster_budget="equal").select(pool, 30, rng=np.random.default_rng(seed))
    assert per_cluster(pool, sel) == [14, 14, 2]  # sum == b exactly, b_j <= |D_j|


def test_counts_are_deterministic_and_inclusion_is_monotone_in_quality():
    # one cluster of 6 items with increasing quality: over many seeds, the count per cluster never
    # varies and inclusion frequency rises with q
    lengths = np.array([1, 2, 4, 8, 16, 32])
    pool = make_pool([6, 6], quality=np.concatenate([lengths, lengths]))
    hits = np.zeros(12)
    for s in range(2000):
        sel = KMQSelector(quality="length", temperature=0.2).select(pool, 4, rng=np.random.default_rng(s))
        assert per_cluster(pool, sel) == [2, 2]
        hits[sel.indices] += 1
    assert np.all(np.diff(hits[:6]) > 0) and np.all(np.diff(hits[6:]) > 0)


def test_constant_quality_is_km_random():
    pool = make_pool([10, 10])
    hits = np.zeros(20)
    for s in range(2000):
        hits[KMQSelector().select(pool, 4, rng=np.random.default_rng(s)).indices] += 1
    assert np.all(np.abs(hits - 400) < 90)  # inclusion 2/10 for every item


def test_k_equals_one_is_quality_softmax_over_the_pool():
    pool = make_pool([8], quality=np.arange(1, 9) ** 2)
    a = KMQSelector(quality="length", temperature=0.005).select(pool, 3, rng=np.random.default_rng(0))
    assert len(a.indices) == 3
    # with a tiny temperature the top-quality items dominate
    assert set(a.indices.tolist()) == {5, 6, 7}


def test_kmq_needs_clusters_and_known_scorer():
    pool = make_pool([4])
    no_clusters = Pool(ids=pool.ids, embeddings=pool.embeddings, groups=pool.groups, group_names=pool.group_names)
    with pytest.raises(DataError, match=r"select\.method='kmq' needs clusters"):
        KMQSelector().select(no_clusters, 2, rng=np.random.default_rng(0))
    with pytest.raises(InvalidParameterError, match=r"quality scorer='lenght' is not a known quality scorer\. Known: constant, influence, knn-agreement, knn-shapley, length, value, python:module:function\."):
        build_selector("kmq", quality="lenght")


# --------------------------------------------------------------------------------- iterative
class FixedFeedback:
    """Per-item feedback = a fixed per-cluster value (for deterministic weight tests)."""

    def __init__(self, per_cluster):
        self.per_cluster = np.asarray(per_cluster, dtype=float)

    def __call__(self, pool, selected, rng):
        return self.per_cluster[pool.clusters[selected]]


def iterative(feedback, **kw):
    from curation.select.feedback import Feedback

    class Wrapped(Feedback):
        def _feedback(self, pool, selected, rng):
            return feedback(pool, selected, rng)

    return IterativeKMQSelector(feedback=Wrapped(), **kw)


@pytest.mark.parametrize("mode", ["multiplicative", "replace"])
def test_iterative_exact_budget_nested_rounds_no_duplicates(mode, seed):
    pool = make_pool([40, 30, 30])
    sel = iterative(FixedFeedback([0.1, 0.5, 0.9]), rounds=3, mode=mode).select(pool, 20, rng=np.random.default_rng(seed))
    assert len(sel.indices) == 20 == len(set(sel.indices.tolist()))
    rounds = sel.columns["round"]
    assert sorted(np.bincount(rounds[sel.indices])[1:].tolist()) == [6, 7, 7]  # b/N per round
    # D' grows by appending: picks are in round order
    assert np.all(np.diff(rounds[sel.indices]) >= 0)
    for w in sel.info["cluster_weights"]:
        assert abs(sum(w) - 1) < 1e-9 and min(w) >= 0


@pytest.mark.parametrize("mode", ["multiplicative", "replace"])
def test_equal_feedback_keeps_weights_uniform(mode):
    pool = make_pool([40, 30, 30])
    sel = iterative(FixedFeedback([0.3, 0.3, 0.3]), rounds=4, mode=mode).select(pool, 40, rng=np.random.default_rng(0))
    for w in sel.info["cluster_weights"]:
        np.testing.assert_allclose(w, [1 / 3] * 3)


@pytest.mark.parametrize("mode", ["multiplicative", "replace"])
def test_lower_feedback_lowers_next_round_count(mode):
    pool = make_pool([100, 100, 100])

    def round2_counts(s0):
        sel = iterative(FixedFeedback([s0, 1.0, 1.0]), rounds=2, mode=mode).select(pool, 60, rng=np.random.default_rng(0))
        r2 = sel.indices[sel.columns["round"][sel.indices] == 2]
        return np.bincount(pool.clusters[r2], minlength=3)

    hi, lo = round2_counts(1.0), round2_counts(-2.0)
    assert hi.tolist() == [10, 10, 10] and lo[0] < hi[0] and lo.sum() == 30


def test_weight_update_formulas():
    sel = IterativeKMQSelector(mode="multiplicative")
    w = np.array([0.5, 0.25, 0.25])
    s = np.array([0.0, np.log(2), 0.0])
    g = np.array([1, 2, 1]) / 4
    np.testing.assert_allclose(sel.update_weights(w, s), w * g / (w * g).sum())
    np.testing.assert_allclose(IterativeKMQSelector(mode="replace").update_weights(w, s), g)


def test_one_round_equals_kmq(seed):
    pool = make_pool([30, 20, 10], quality=np.arange(60) % 7 + 1)
    a = KMQSelector(quality="length").select(pool, 12, rng=np.random.default_rng(seed))
    b = IterativeKMQSelector(rounds=1, quality="length").select(pool, 12, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(np.sort(a.indices), np.sort(b.indices))


def test_default_feedback_is_proxy_loss_on_labels(seed):
    # cluster 2's labels are noise (hard to learn): its loss is higher, so its weight grows
    rng = np.random.default_rng(seed)
    sizes = [200, 200, 200]
    clusters = np.repeat([0, 1, 2], sizes)
    X = np.concatenate([rng.normal(c * 4, 1, (n, 2)) for c, n in zip(range(3), sizes)]).astype(np.float32)
    y = np.where(clusters < 2, (X[:, 1] > X[:, 1].mean()).astype(int), rng.integers(0, 2, 600))
    pool = Pool(ids=np.arange(600).astype(str), embeddings=X, groups=np.zeros(600, int), group_names=("*",),
                clusters=clusters, labels=y)
    sel = IterativeKMQSelector(rounds=3).select(pool, 150, rng=np.random.default_rng(seed))
    final = sel.info["cluster_weights"][-1]
    assert final[2] == max(final) and final[2] > 1 / 3


def test_proxy_loss_needs_labels():
    with pytest.raises(DataError, match=r"needs labels: set sources\[\]\.label"):
        IterativeKMQSelector(rounds=2).select(make_pool([20, 20]), 10, rng=np.random.default_rng(0))
