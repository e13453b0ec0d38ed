"""Held-out reference sets: the fraction split and the overlap filter."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from curation.exceptions import DataError
from curation.holdout import drop_overlap, split_fraction


def items(n=100, labels=("a",) * 70 + ("b",) * 25 + ("c",) * 5):
    return pl.DataFrame({"id": [f"r{i}" for i in range(n)], "source": "s", "group": "*",
                         "__text": [f"t{i}" for i in range(n)], "__label": list(labels)[:n]})


def test_fraction_split_is_stratified_exact_and_disjoint(seed):
    df = items()
    pool, held = split_fraction(df, 0.2, rng=np.random.default_rng(seed))
    assert held.height == 20 and pool.height == 80
    assert set(pool["id"]).isdisjoint(held["id"]) and set(pool["id"]) | set(held["id"]) == set(df["id"])
    assert dict(held.group_by("__label").len().iter_rows()) == {"a": 14, "b": 5, "c": 1}
    assert pool["id"].to_list() == [i for i in df["id"] if i in set(pool["id"])]  # order kept


def test_every_label_keeps_a_row_in_the_pool():
    df = items(10, labels=["a"] * 8 + ["b", "c"])  # b and c have a single row each
    pool, held = split_fraction(df, 0.5, rng=np.random.default_rng(0))
    assert held.height == 5 and {"b", "c"} <= set(pool["__label"])


def test_split_is_seeded():
    df = items()
    a = split_fraction(df, 0.3, rng=np.random.default_rng(5))[1]["id"].to_list()
    b = split_fraction(df, 0.3, rng=np.random.default_rng(5))[1]["id"].to_list()
    c = split_fraction(df, 0.3, rng=np.random.default_rng(6))[1]["id"].to_list()
    assert a == b != c


def test_unlabelled_split_and_a_fraction_that_leaves_nothing():
    df = items().drop("__label")
    assert split_fraction(df, 0.25, rng=np.random.default_rng(0))[1].height == 25
    with pytest.raises(DataError, match="reference.fraction=0.001"):
        split_fraction(df, 0.001, rng=np.random.default_rng(0))


def test_drop_overlap_reports_the_dropped_rows():
    df = items(10)
    pool, dropped = drop_overlap(df, df.filter(pl.col("id").is_in(["r1", "r4"])))
    assert pool.height == 8 and sorted(dropped["id"]) == ["r1", "r4"]
    assert set(dropped["reason"]) == {"duplicate_of_reference"} and "__text" not in dropped.columns


def test_split_is_stratified_by_label_and_group():
    df = items().with_columns(pl.Series("group", ["x", "y"] * 50))
    held = split_fraction(df, 0.2, rng=np.random.default_rng(0))[1]
    counts = dict(((g, lab), n) for g, lab, n in held.group_by("group", "__label").len().iter_rows())
    assert counts[("x", "a")] == 7 and counts[("y", "a")] == 7 and held.height == 20


def test_reference_rows_carry_the_pool_group_codes():
    from curation.pipeline import make_reference

    held = items(4).with_columns(pl.Series("group", ["b", "zz", "a", "b"]))
    ref = make_reference(held, np.zeros((4, 2), np.float32), None, ("a", "b"))
    assert ref.groups.tolist() == [1, -1, 0, 1] and ref.labels.tolist() == ["a"] * 4
