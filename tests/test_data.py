"""The data `make data` fetches: Adult's numeric columns are numbers, so the tabular embedder
standardises them instead of one-hot encoding every distinct value."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import yaml

from curation.embed.tabular import TabularEncoder

# as in tests/conftest.py (importing it by name is ambiguous: tests/flows has a conftest too)
ROOT = Path(__file__).resolve().parents[1]
ADULT = ROOT / "data" / "adult.parquet"


NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]
CATEGORICAL = ["workclass", "education", "marital_status", "occupation", "relationship", "race", "sex",
               "native_country", "income"]


def _fetch_fairness():
    spec = importlib.util.spec_from_file_location("fetch_fairness", ROOT / "infra/data/fetch_fairness.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_adult_numeric_columns_are_integers_with_census_ranges():
    df = pl.read_parquet(ADULT)
    assert {c: df.schema[c] for c in NUMERIC} == dict.fromkeys(NUMERIC, pl.Int64)
    assert df.select(pl.col(NUMERIC).null_count()).row(0) == (0,) * len(NUMERIC)
    assert (df["age"].min(), df["age"].max()) == (17, 90)
    assert (df["hours_per_week"].min(), df["hours_per_week"].max()) == (1, 99)
    assert (df["education_num"].min(), df["education_num"].max()) == (1, 16)


def test_adult_categorical_columns_are_stripped_strings():
    df = pl.read_parquet(ADULT)
    assert {c: df.schema[c] for c in CATEGORICAL} == dict.fromkeys(CATEGORICAL, pl.String)
    padded = df.select(pl.col(CATEGORICAL).str.contains(r"^\s|\s$").sum()).row(0)
    assert padded == (0,) * len(CATEGORICAL)
    assert set(df["income"].unique()) == {">50K", "<=50K"}  # the test file's trailing dots removed


def test_adult_equity_features_embed_numerics_as_one_dimension_each():
    features = yaml.safe_load((ROOT / "examples/adult-equity.yaml").read_text())["sources"][0]["features"]
    df = pl.read_parquet(ADULT)
    enc = TabularEncoder(features).fit(df)
    kinds = {c: kind for c, kind, _ in enc.columns_}
    assert {c for c, k in kinds.items() if k == "numeric"} == set(features) & set(NUMERIC)
    categorical = [c for c in features if c not in NUMERIC]
    # one dimension per numeric column, one per category otherwise (42 for this recipe; 372 when
    # the numerics were text)
    assert enc.dim == len(set(features) & set(NUMERIC)) + sum(df[c].n_unique() for c in categorical) == 42


def test_fetch_refetches_an_adult_file_with_numbers_stored_as_text(tmp_path):
    fetch = _fetch_fairness()
    stale = tmp_path / "stale.parquet"
    pl.DataFrame({"age": [39], "hours_per_week": [" 40"], "income": ["<=50K"]}).write_parquet(stale)
    assert fetch.adult_is_stale(stale)
    assert not fetch.adult_is_stale(ADULT)
