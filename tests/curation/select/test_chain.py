"""The composed selection (``chain``): filter -> allocate across groups -> select within each group."""

from __future__ import annotations

import numpy as np
import pytest

import curation
from curation.metrics import vendi_score
from curation.select import StratifiedSelector, build_selector
from curation.types import Pool


def blob_pool(seed: int = 0) -> Pool:
    """3 groups of unequal size (600/300/100), each spread over 12 Gaussian blobs of unequal size
    (the global clusters are the blobs), labels, and data values."""
    rng = np.random.default_rng(seed)
    sizes = [600, 300, 100]
    groups = np.repeat(np.arange(3), sizes)
    n = len(groups)
    centers = rng.normal(scale=6.0, size=(12, 16))
    weights = np.geomspace(1, 20, 12)  # some blobs are 20x rarer than others
    clusters = rng.choice(12, size=n, p=weights / weights.sum())
    X = (centers[clusters] + rng.normal(size=(n, 16))).astype(np.float32)
    return Pool(ids=np.arange(n).astype(str), embeddings=X, groups=groups, group_names=("big", "mid", "small"),
                clusters=clusters, labels=rng.integers(0, 2, n), values=rng.normal(size=n))


def per_group(pool: Pool, idx: np.ndarray) -> list[int]:
    return np.bincount(pool.groups[idx], minlength=len(pool.group_names)).tolist()


@pytest.mark.parametrize("mode", ["equal", "proportional"])
@pytest.mark.parametrize("within", [{"method": "kmq"}, {"method": "kmq-iterative", "rounds": 2}, {"method": "random"}])
def test_every_group_gets_exactly_its_stratified_quota(mode, within, seed):
    pool = blob_pool()
    sel = build_selector("chain", allocate={"method": "stratified", "mode": mode}, within=within).select(
        pool, 150, rng=np.random.default_rng(seed))
    want = StratifiedSelector(mode=mode).quotas(pool, 150).tolist()
    assert per_group(pool, sel.indices) == want
    assert len(np.unique(sel.indices)) == len(sel.indices) == 150
    assert [g["quota"] for g in sel.info["groups"]] == want


def test_quotas_after_a_filter_are_those_of_the_filtered_pool_and_no_dropped_item_is_selected(seed):
    pool = blob_pool()
    chain = build_selector("chain", filter={"method": "value-threshold", "mode": "drop", "drop_fraction": 0.2,
                                            "threshold": None},
                           allocate={"method": "stratified", "mode": "equal"}, within={"method": "kmq"})
    sel = chain.select(pool, 150, rng=np.random.default_rng(seed))
    dropped = sel.reason_codes == "filtered"
    assert dropped.sum() == 200  # the 20% lowest-valued items
    assert set(np.flatnonzero(dropped)) == set(np.argsort(pool.values)[:200].tolist())  # distinct values
    assert not dropped[sel.indices].any()
    kept = pool.take(np.flatnonzero(~dropped))
    assert per_group(pool, sel.indices) == StratifiedSelector(mode="equal").quotas(kept, 150).tolist()


def test_each_row_says_which_step_decided_it(seed):
    pool = blob_pool()
    # shares name only 'big' and 'mid': 'small' gets quota 0, decided by the allocation
    chain = build_selector("chain", filter={"method": "value-threshold", "mode": "drop", "drop_fraction": 0.1,
                                            "threshold": None},
                           allocate={"method": "stratified", "mode": "shares", "shares": {"big": 1, "mid": 1}},
                           within={"method": "kmq"})
    sel = chain.select(pool, 100, rng=np.random.default_rng(seed))
    decided, reasons = sel.columns["decided_by"], sel.reasons
    assert set(decided[sel.reason_codes == "filtered"]) == {"filter"}
    assert all(r.startswith("filter: value-threshold: dropped") for r in reasons[decided == "filter"])
    small = (pool.groups == 2) & (decided != "filter")
    assert set(decided[small]) == {"allocate"}  # quota 0: the allocation decided the whole group
    assert all("quota 0" in r and "the group gets no items" in r for r in reasons[small])
    inside = (pool.groups < 2) & (decided != "filter")
    assert set(decided[inside]) == {"within"}
    assert all(r.startswith("allocate: stratified (shares): group") and "; within: kmq: " in r for r in reasons[inside])
    assert set(sel.reason_codes[sel.indices]) == {"selected"}
    np.testing.assert_array_equal(sel.columns["quota"][inside & (pool.groups == 0)], 50)


def test_a_group_smaller_than_its_quota_is_taken_whole_by_the_allocation(seed):
    pool = blob_pool()
    sel = build_selector("chain", allocate={"method": "stratified", "mode": "shares",
                                            "shares": {"small": 1}}, within={"method": "kmq"}).select(
        pool, 150, rng=np.random.default_rng(seed))
    small = pool.groups == 2
    assert set(sel.columns["decided_by"][small]) == {"allocate"}
    assert np.isin(np.flatnonzero(small), sel.indices).all()  # all 100 of 'small', the other 50 elsewhere
    assert per_group(pool, sel.indices)[2] == 100


def test_same_seed_same_selection_and_reasons():
    pool = blob_pool()
    chain = build_selector("chain", filter={"method": "value-threshold", "mode": "drop", "drop_fraction": 0.1},
                           allocate={"method": "stratified", "mode": "equal"}, within={"method": "kmq"})
    a, b = (chain.select(pool, 120, rng=np.random.default_rng(7)) for _ in range(2))
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.reasons.tolist() == b.reasons.tolist()
    c = chain.select(pool, 120, rng=np.random.default_rng(8))
    assert set(a.indices) != set(c.indices)


def test_within_each_group_the_chain_is_at_least_as_diverse_as_random_sampling_of_the_same_quota():
    """Vendi score and cluster coverage of each group's picks against the mean of 20 uniform
    draws of the same quota from the same group."""
    pool = blob_pool()
    chain = build_selector("chain", allocate={"method": "stratified", "mode": "equal"},
                           within={"method": "kmq", "cluster_budget": "equal"})
    for seed in range(3):
        sel = chain.select(pool, 60, rng=np.random.default_rng(seed))
        rng = np.random.default_rng(100 + seed)
        for g in range(3):
            mine = sel.indices[pool.groups[sel.indices] == g]
            members = np.flatnonzero(pool.groups == g)
            draws = [rng.choice(members, size=len(mine), replace=False) for _ in range(20)]
            assert len(mine) == 20
            assert vendi_score(pool.embeddings[mine]) >= np.mean([vendi_score(pool.embeddings[d]) for d in draws])
            coverage = len(np.unique(pool.clusters[mine]))
            assert coverage >= np.mean([len(np.unique(pool.clusters[d])) for d in draws])


def test_group_adaptive_allocation_with_a_within_selector_keeps_its_counts_and_measures_the_final_selection():
    pool = blob_pool()
    chain = build_selector("chain", allocate={"method": "group-adaptive", "allocation": "proportional"},
                           within={"method": "kmq"})
    sel = chain.select(pool, 150, rng=np.random.default_rng(0))
    alloc = sel.info["steps"]["allocate"]["info"]
    counts = [g["n"] for g in alloc["equity"]["groups"]]
    assert per_group(pool, sel.indices) == counts and sum(counts) == 150
    held = sel.reason_codes == "validation_holdout"
    assert held.sum() > 0 and not held[sel.indices].any()
    assert set(sel.columns["decided_by"][held]) == {"allocate"}
    assert alloc["equity"]["worst_group_error"] is not None


def test_a_recipe_without_method_but_with_steps_is_a_chain_and_bad_steps_fail_in_one_line(tmp_path):
    base = {"name": "c", "sources": [{"name": "s", "path": str(tmp_path / "x.parquet"), "text": "text"}],
            "output": {"root": str(tmp_path)}}
    r = curation.load_recipe({**base, "select": {"budget": 10, "allocate": {"method": "stratified", "mode": "equal"},
                                                 "within": {"method": "kmq"}}})
    assert r.select.method == "chain"
    assert r.select.params()["within"] == {"method": "kmq"}
    bad = [({"within": {"method": "stratified"}}, r"select\.within\.method='stratified' allocates across groups"),
           ({"allocate": {"method": "kmq"}}, r"select\.allocate\.method='kmq' cannot be the allocate step"),
           ({"filter": {"method": "kmq"}, "within": {"method": "kmq"}},
            r"select\.filter\.method='kmq' cannot be the filter step; methods that can: value-threshold"),
           ({"within": {"method": "kmq", "budget": 3}}, r"select\.within\.budget: the budget belongs to select"),
           ({"within": {"method": "kmq", "temprature": 1}}, r"select\.within\.temprature is not a setting of method 'kmq'"),
           ({"filter": {"method": "value-threshold"}, "within": {"method": "kmq"}},
            r"value-threshold filters in mode 'drop'")]
    for steps, message in bad:
        with pytest.raises(curation.RecipeError, match=message):
            curation.load_recipe({**base, "select": {"budget": 10, **steps}})


def test_a_filter_that_leaves_fewer_rows_than_the_budget_gives_all_survivors_and_no_dropped_row():
    pool = blob_pool()
    chain = build_selector("chain", filter={"method": "value-threshold", "mode": "drop", "threshold": None,
                                            "drop_fraction": 0.9}, within={"method": "kmq"})
    sel = chain.select(pool, 150, rng=np.random.default_rng(0))
    survivors = np.flatnonzero(sel.reason_codes != "filtered")
    assert len(survivors) == 100 and sorted(sel.indices.tolist()) == survivors.tolist()
