"""Stratified quotas: proportional, equal, explicit shares, minimums, shortfall."""

from __future__ import annotations

import numpy as np
import pytest

from curation.exceptions import InvalidParameterError
from curation.select import StratifiedSelector
from curation.types import Pool


def make_pool(sizes: list[int]) -> Pool:
    groups = np.repeat(np.arange(len(sizes)), sizes)
    n = len(groups)
    return Pool(ids=np.arange(n).astype(str), embeddings=np.zeros((n, 1), np.float32), groups=groups,
                group_names=tuple(f"g{i}" for i in range(len(sizes))))


def counts(pool, sel):
    return np.bincount(pool.groups[sel.indices], minlength=len(pool.group_names)).tolist()


def test_proportional_follows_the_pool_mix(seed):
    pool = make_pool([600, 300, 100])
    sel = StratifiedSelector(mode="proportional").select(pool, 100, rng=np.random.default_rng(seed))
    assert counts(pool, sel) == [60, 30, 10]


def test_equal_with_shortfall_redistributed(seed):
    pool = make_pool([500, 500, 5])
    sel = StratifiedSelector(mode="equal").select(pool, 90, rng=np.random.default_rng(seed))
    assert counts(pool, sel) == [43, 42, 5]  # the small group gives all 5; 25 spare rows split 13/12
    assert sel.info["short_groups"] == ["g2"]


def test_explicit_shares_and_minimum(seed):
    pool = make_pool([400, 400, 400])
    sel = StratifiedSelector(mode="shares", shares={"g0": 3, "g1": 1}, min_per_group=5).select(
        pool, 45, rng=np.random.default_rng(seed))
    # 5 each first, then 30 split 3:1:0 -> 22.5/7.5 -> 23/7 (ties to the first group)
    assert counts(pool, sel) == [28, 12, 5]


def test_proportional_min_per_group_lifts_a_minority(seed):
    pool = make_pool([980, 20])
    sel = StratifiedSelector(mode="proportional", min_per_group=20).select(pool, 100, rng=np.random.default_rng(seed))
    assert counts(pool, sel) == [80, 20]


def test_reasons_name_the_group_and_quota():
    pool = make_pool([5, 5])
    sel = StratifiedSelector(mode="equal").select(pool, 4, rng=np.random.default_rng(0))
    chosen = set(sel.indices.tolist())
    assert sel.reasons[next(iter(chosen))].startswith("stratified (equal): drawn for group")
    other = next(i for i in range(10) if i not in chosen)
    assert "quota 2 of 5 filled" in sel.reasons[other]


def test_shares_naming_an_unknown_group_fails_clearly():
    with pytest.raises(InvalidParameterError, match=r"select\.shares names group 'nope', which is not in the data"):
        StratifiedSelector(mode="shares", shares={"nope": 1}).select(make_pool([3, 3]), 2, rng=np.random.default_rng(0))


def test_shares_mode_without_shares_fails_clearly():
    with pytest.raises(InvalidParameterError, match=r"mode='shares' needs select\.shares"):
        StratifiedSelector(mode="shares").validate()


def test_within_group_draw_is_uniform():
    pool = make_pool([10, 10])
    hits = np.zeros(20)
    for s in range(2000):
        hits[StratifiedSelector(mode="equal").select(pool, 4, rng=np.random.default_rng(s)).indices] += 1
    # each item has inclusion probability 2/10 = 0.2; 2000 draws -> 400 +- ~18 (sd)
    assert np.all(np.abs(hits - 400) < 90)
