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
