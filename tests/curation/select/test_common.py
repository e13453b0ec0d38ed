"""The conformance suite every Selector must pass (scikit-learn's check_estimator idea).

Add each new selector to ALL_SELECTORS.
"""

from __future__ import annotations

import numpy as np
import pytest

from curation.exceptions import InvalidParameterError
from curation.select import (
    ChainSelector,
    GroupAdaptiveSelector,
    IterativeKMQSelector,
    KMQSelector,
    QuadSelector,
    RandomSelector,
    Selector,
    StratifiedSelector,
    ValueThresholdSelector,
    build_selector,
)
from curation.types import Pool

ALL_SELECTORS = [
    RandomSelector(),
    StratifiedSelector(mode="proportional"),
    StratifiedSelector(mode="equal"),
    StratifiedSelector(mode="equal", min_per_group=1),
    StratifiedSelector(mode="shares", shares={"a": 1.0, "b": 3.0}),
    KMQSelector(),
    KMQSelector(quality="length", cluster_budget="equal"),
    KMQSelector(quality="knn-agreement"),
    IterativeKMQSelector(rounds=2),
    IterativeKMQSelector(rounds=3, mode="replace", within="uniform"),
    # every probe passes (length > 0 = tau), so Quad fills the budget like the others
    QuadSelector(scorer="length", clusters_per_round=2, probe=2, chunk=2, tau=0.0, alpha=0.1),
    QuadSelector(scorer="length", clusters_per_round=1, probe=1, chunk=3, tau=0.0, alpha=1.0, ucb="paper", rho=0.0),
    KMQSelector(quality="value"),
    ValueThresholdSelector(),
    ValueThresholdSelector(mode="drop", threshold=None),  # nothing dropped, so the budget fills
    GroupAdaptiveSelector(allocation="equal", validation=0.01),  # tiny strata: nothing held out
    GroupAdaptiveSelector(allocation="proportional", validation=0.01),
    ChainSelector(allocate={"method": "stratified", "mode": "equal"}, within={"method": "kmq"}),
    ChainSelector(filter={"method": "value-threshold", "mode": "drop", "threshold": None},
                  allocate={"method": "stratified"}, within={"method": "random"}),
    ChainSelector(within={"method": "kmq-iterative", "rounds": 2}),
]


def test_every_registered_selector_is_in_the_suite():
    assert {type(s).name for s in ALL_SELECTORS} == set(Selector.registry)


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
@pytest.mark.parametrize("budget", [2, 4, 8])  # min_per_group=1 over 2 groups needs >= 2
def test_selection_is_valid(selector, toy_pool, seed, budget):
    sel = selector.select(toy_pool, budget, rng=np.random.default_rng(seed))
    assert len(sel.indices) == budget and len(set(sel.indices.tolist())) == budget
    assert sel.indices.min() >= 0 and sel.indices.max() < len(toy_pool)
    assert sel.reasons is None or len(sel.reasons) == len(toy_pool)


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_same_seed_same_selection(selector, toy_pool, seed):
    a = selector.select(toy_pool, 4, rng=np.random.default_rng(seed))
    b = selector.select(toy_pool, 4, rng=np.random.default_rng(seed))
    np.testing.assert_array_equal(a.indices, b.indices)


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_different_seeds_can_differ(selector):
    X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)
    pool = Pool(ids=np.arange(200).astype(str), embeddings=X, groups=np.repeat([0, 1], 100), group_names=("a", "b"),
                clusters=np.tile([0, 1, 2, 3], 50), labels=np.tile([0, 1], 100),
                texts=np.array([f"t{i}" for i in range(200)], dtype=object),
                values=np.tile([0.0, 1.0], 100))  # ties: the top-valued half is drawn from at random
    picks = {tuple(sorted(selector.select(pool, 10, rng=np.random.default_rng(s)).indices)) for s in range(5)}
    assert len(picks) > 1


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_budget_larger_than_pool_is_a_clear_error(selector, toy_pool):
    with pytest.raises(InvalidParameterError, match=r"budget=9 should be <= n_samples=8"):
        selector.select(toy_pool, 9, rng=np.random.default_rng(0))


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_non_positive_budget_is_a_clear_error(selector, toy_pool):
    with pytest.raises(InvalidParameterError, match=r"budget=0 should be > 0"):
        selector.select(toy_pool, 0, rng=np.random.default_rng(0))


@pytest.mark.parametrize("selector", ALL_SELECTORS, ids=repr)
def test_does_not_mutate_the_pool(selector, toy_pool):
    before = (toy_pool.embeddings.copy(), toy_pool.groups.copy())
    selector.select(toy_pool, 5, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(before[0], toy_pool.embeddings)
    np.testing.assert_array_equal(before[1], toy_pool.groups)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(InvalidParameterError, match=r"select\.method='qaud' is not a known selector\. Known: chain, group-adaptive, kmq, kmq-iterative, quad, random, stratified, value-threshold"):
        build_selector("qaud")


def test_unknown_setting_lists_the_accepted_keys():
    with pytest.raises(InvalidParameterError, match=r"select\.mood is not a setting of method 'stratified'.*mode, min_per_group, shares"):
        build_selector("stratified", mood="equal")


def test_bad_setting_value_names_field_value_and_allowed():
    with pytest.raises(InvalidParameterError, match=r"The 'mode' parameter of StratifiedSelector must be one of 'equal', 'proportional', 'shares'\. Got 'eqaul' instead"):
        build_selector("stratified", mode="eqaul")
