"""The equity proxy learner: per-group errors, group-aware features."""

from __future__ import annotations

import numpy as np

from curation.equity.proxy import ProxyLearner
from curation.types import Pool, Reference


def shifted_pool(seed: int = 0, n: int = 2000) -> Pool:
    """Two groups on the same 1-D feature; the label threshold is 0 in group 'a' and 1.5 in 'b',
    so one shared intercept cannot be right for both."""
    rng = np.random.default_rng(seed)

    def rows(m):
        g = rng.integers(0, 2, m)
        x = rng.normal(0.75, 1.0, size=(m, 1)).astype(np.float32)
        y = (x[:, 0] > np.where(g == 0, 0.0, 1.5)).astype(int)
        return x, g, y

    X, g, y = rows(n)
    Xr, gr, yr = rows(1000)
    ref = Reference(ids=np.arange(1000).astype(str), embeddings=Xr, labels=yr, groups=gr)
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=g, group_names=("a", "b"), labels=y, reference=ref)


def test_a_group_aware_proxy_learns_a_group_whose_boundary_is_shifted_and_a_shared_one_cannot():
    pool = shifted_pool()
    rows = np.arange(len(pool))
    aware = ProxyLearner(pool).errors(rows)
    shared = ProxyLearner(pool, group_features=False).errors(rows)
    assert aware.max() < 0.08  # both groups near their Bayes error (0: the labels are deterministic)
    assert shared.max() > 0.15  # one intercept splits the difference: one group is always wrong
    # 20x more data: the shared proxy's worst group stays as bad (a flat curve), the aware one learns
    few = np.random.default_rng(1).choice(rows, 100, replace=False)
    assert abs(ProxyLearner(pool, group_features=False).errors(few).max() - shared.max()) < 0.06
    assert ProxyLearner(pool).errors(few).max() - aware.max() > 0.03


def test_your_own_model_is_the_proxy_through_a_python_hook():
    """``learner: python:sklearn.dummy:DummyClassifier`` (predicts the training majority): each
    group's error is the share of its validation rows outside that class, whatever the features."""
    pool = shifted_pool()
    rows = np.arange(300)
    majority = np.bincount(pool.labels[rows]).argmax()
    expected = [float((pool.reference.labels[pool.reference.groups == g] != majority).mean()) for g in (0, 1)]
    got = ProxyLearner(pool, learner="python:sklearn.dummy:DummyClassifier").errors(rows)
    np.testing.assert_allclose(got, expected)
    assert not np.allclose(ProxyLearner(pool).errors(rows), expected)  # the default proxy does learn


def test_a_learner_hook_that_is_not_a_model_fails_in_one_line_before_any_work():
    import pytest

    from curation.exceptions import InvalidParameterError
    from curation.select import build_selector

    with pytest.raises(InvalidParameterError, match=r"select\.learner='python:nope_module:f' cannot be loaded"):
        build_selector("group-adaptive", learner="python:nope_module:f")
    with pytest.raises(InvalidParameterError, match=r"select\.learner='python:math:pi' names float"):
        build_selector("group-adaptive", learner="python:math:pi")
    with pytest.raises(InvalidParameterError, match=r"returned list, not an estimator with fit"):
        ProxyLearner(shifted_pool(), learner="python:builtins:list").errors(np.arange(50))
