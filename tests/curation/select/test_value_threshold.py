"""value-threshold: keep the most valuable items, or drop the harmful ones."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from curation.exceptions import DataError
from curation.select import ValueThresholdSelector
from curation.types import Pool


def valued_pool(values):
    n = len(values)
    return Pool(ids=np.arange(n).astype(str), embeddings=np.zeros((n, 2), np.float32), groups=np.zeros(n, np.int64),
                group_names=("*",), values=np.asarray(values, dtype=float))


def test_top_keeps_the_highest_values(seed):
    v = np.random.default_rng(seed).normal(size=50)
    sel = ValueThresholdSelector().select(valued_pool(v), 10, rng=np.random.default_rng(seed))
    assert set(sel.indices) == set(np.argsort(-v)[:10])
    assert sel.info["cutoff"] == pytest.approx(np.sort(v)[-10])
    assert all("highest" in r for r in sel.reasons[sel.indices])


def test_drop_removes_negative_and_lowest_then_samples_the_rest(seed):
    v = np.linspace(-1, 1, 21)  # 10 negative, one 0, 10 positive
    sel = ValueThresholdSelector(mode="drop", threshold=0.0, drop_fraction=0.2).select(
        valued_pool(v), 5, rng=np.random.default_rng(seed))
    assert len(sel.indices) == 5 and (v[sel.indices] >= 0).all()
    assert sel.info == {"dropped": 10, "survivors": 11}  # the lowest 20% are all negative already
    assert all("below threshold 0" in r for r in sel.reasons[:10])


def test_drop_never_pads_with_dropped_items():
    v = np.array([-3.0, -2.0, 1.0, 2.0, -1.0])
    sel = ValueThresholdSelector(mode="drop").select(valued_pool(v), 4, rng=np.random.default_rng(0))
    assert sorted(sel.indices.tolist()) == [2, 3]


def test_without_values_the_error_says_how_to_add_them():
    pool = replace(valued_pool([1.0, 2.0]), values=None)
    with pytest.raises(DataError, match=r"add a `value:` section"):
        ValueThresholdSelector().select(pool, 1, rng=np.random.default_rng(0))
