"""value_pool: the recipe's value stage on a Pool (methods, sharding, groups, guards)."""

from __future__ import annotations

import numpy as np
import pytest

from curation.exceptions import DataError
from curation.types import Pool, Reference
from curation.value import knn_shapley
from curation.value.pool import value_method as ValueConfig
from curation.value.pool import value_pool


def labelled_pool(n=60, n_val=25, seed=0, groups=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, 3)) + 2.5 * y[:, None]).astype(np.float32)
    yv = rng.integers(0, 2, n_val)
    Xv = (rng.normal(size=(n_val, 3)) + 2.5 * yv[:, None]).astype(np.float32)
    labels = y.astype(str)
    labels[:6] = np.where(y[:6] == 1, "0", "1")  # six flipped labels
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=np.arange(n) % groups,
                group_names=tuple("abcdefgh"[:groups]), labels=labels,
                reference=Reference(ids=np.arange(n_val).astype(str), embeddings=Xv, labels=yv.astype(str)))


def reversed_map(func, args):  # a scheduler that runs shards out of order
    return [func(a) for a in args[::-1]][::-1]


def test_knn_shapley_sharded_equals_one_call():
    pool = labelled_pool()
    res = value_pool(pool, ValueConfig(k=3), rng=np.random.default_rng(0), map_fn=reversed_map, n_jobs=4)
    direct = knn_shapley(pool.embeddings, pool.labels, pool.reference.embeddings, pool.reference.labels, 3)
    np.testing.assert_allclose(res.values, direct, atol=1e-12)
    assert res.info["shards"] == 4 and np.isnan(res.stderr).all() and res.info["validation_rows"] == 25
    assert res.values[:6].mean() < res.values[6:].mean()


def test_truncated_knn_shapley_streams_the_pool_in_row_shards_and_merges_to_the_one_search(monkeypatch):
    """Each task holds one shard of pool rows (and the held-out rows); the shards' nearest rows
    merge into the K* nearest of one search over the whole pool, so the values are the same."""
    import importlib

    knn_module = importlib.import_module("curation.value.knn_shapley")  # the module, not the function

    pool = labelled_pool(n=60, n_val=25)
    direct = knn_shapley(pool.embeddings, pool.labels, pool.reference.embeddings, pool.reference.labels, 3,
                         epsilon=0.1)
    monkeypatch.setattr(knn_module, "SHARD_ROWS", 16)
    seen = []

    def recording_map(func, args):
        seen.extend(len(a[0]) for a in args)
        return reversed_map(func, args)

    res = value_pool(pool, ValueConfig(k=3, epsilon=0.1), rng=np.random.default_rng(0), map_fn=recording_map)
    assert seen == [16, 16, 16, 12] and res.info["shards"] == 4
    np.testing.assert_allclose(res.values, direct, atol=1e-12)
    monkeypatch.setattr(knn_module, "SHARD_ROWS", 7)  # the function alone shards the same way
    np.testing.assert_allclose(knn_shapley(pool.embeddings, pool.labels, pool.reference.embeddings,
                                           pool.reference.labels, 3, epsilon=0.1), direct, atol=1e-12)


def test_merged_neighbours_rank_equal_distances_in_training_order():
    from curation.value.knn_shapley import merge_neighbours, shard_neighbours

    X = np.zeros((10, 2), np.float32)
    X[[7, 2]] = [1, 1]  # two copies of the test point, in different shards; the rest farther
    X[[0, 1, 3, 4, 5, 6, 8, 9]] = np.arange(8, dtype=np.float32)[:, None] + 3
    test = np.array([[1, 1]], np.float32)
    parts = [shard_neighbours(X[a : a + 4], a, test, 3) for a in (8, 4, 0)]  # in any order
    assert merge_neighbours(parts, 3).tolist() == [[2, 7, 0]]


def test_tmc_values_with_stderr_and_group_players():
    pool = labelled_pool(n=30, n_val=40)
    cfg = ValueConfig(method="tmc-shapley", max_permutations=20, conv_rtol=0)
    res = value_pool(pool, cfg, rng=np.random.default_rng(1))
    assert res.values.shape == (30,) and np.isfinite(res.stderr).all() and res.info["permutations"] == 20
    grouped = value_pool(pool, cfg.model_copy(update={"players": "groups"}), rng=np.random.default_rng(1))
    gv = grouped.info["group_values"]
    assert set(gv) == {"a", "b"}
    for code, name in enumerate(pool.group_names):  # a group's items share its value equally
        members = pool.groups == code
        np.testing.assert_allclose(grouped.values[members], gv[name] / members.sum())


@pytest.mark.parametrize("method", ["loo", "banzhaf", "beta-shapley", "g-shapley"])
def test_every_model_based_method_runs_on_a_pool(method):
    pool = labelled_pool(n=20, n_val=30)
    budget = {"samples": 60} if method in ("beta-shapley", "banzhaf") else {"max_permutations": 10} if method in (
        "tmc-shapley", "g-shapley") else {}
    res = value_pool(pool, ValueConfig(method=method, **budget), rng=np.random.default_rng(0))
    assert res.values.shape == (20,) and np.isfinite(res.values).all()


def test_model_based_methods_refuse_large_pools_with_the_fix():
    with pytest.raises(DataError, match=r"value.max_items=10.*knn-shapley"):
        value_pool(labelled_pool(), ValueConfig(method="tmc-shapley", max_items=10), rng=np.random.default_rng(0))
