"""Tabular rows to vectors: standardised numerics plus one-hot categoricals.

For a numeric column x: ``(x - mean) / std`` (std 0 -> 1; missing -> 0, the mean).
For any other column: one indicator per distinct value, sorted so the layout is stable;
missing values get their own ``<null>`` indicator. The encoder is fitted on the pool it then
encodes, so the same rows always give the same vectors.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

import numpy as np
import polars as pl

from curation.exceptions import DataError


class TabularEncoder:
    """Fit-and-transform feature encoder for tabular sources.

    Args:
        features: the feature columns, in order.
        max_categories: a categorical column with more distinct values than this is an error
            (it is probably an id or free text; name it as ``text`` instead).

    >>> df = pl.DataFrame({"age": [20, 40], "city": ["a", "b"]})
    >>> TabularEncoder(["age", "city"]).fit(df).transform(df).tolist()
    [[-1.0, 1.0, 0.0], [1.0, 0.0, 1.0]]
    """

    def __init__(self, features: Sequence[str], *, max_categories: int = 200) -> None:
        self.features = list(features)
        self.max_categories = max_categories

    def fit(self, df: pl.DataFrame) -> TabularEncoder:
        missing = [c for c in self.features if c not in df.columns]
        if missing:
            raise DataError(
                f"feature column {missing[0]!r} is not in the source. Available columns: {', '.join(df.columns)}."
            )
        self.columns_: list[tuple[str, str, object]] = []
        for c in self.features:
            s = df[c]
            if s.dtype.is_numeric():
                x = s.cast(pl.Float64)
                mean = x.mean() if x.drop_nulls().len() else 0.0
                std = x.std(ddof=0) if x.drop_nulls().len() > 1 else 1.0
                self.columns_.append((c, "numeric", (float(mean or 0.0), float(std) if std else 1.0)))
            else:
                cats = sorted({str(v) if v is not None else "<null>" for v in s.to_list()})
                if len(cats) > self.max_categories:
                    raise DataError(
                        f"feature column {c!r} has {len(cats)} distinct values (> {self.max_categories}); "
                        "it looks like an id or free text. Drop it from features or use it as `text`."
                    )
                self.columns_.append((c, "categorical", cats))
        return self

    @property
    def dim(self) -> int:
        return sum(1 if kind == "numeric" else len(p) for _, kind, p in self.columns_)  # type: ignore[arg-type]

    @property
    def id(self) -> str:
        spec = json.dumps(self.columns_, sort_keys=True, default=str)
        return f"tabular:{hashlib.sha256(spec.encode()).hexdigest()[:16]}"

    def transform(self, df: pl.DataFrame) -> np.ndarray:
        blocks: list[np.ndarray] = []
        for c, kind, p in self.columns_:
            s = df[c]
            if kind == "numeric":
                mean, std = p  # type: ignore[misc]
                x = s.cast(pl.Float64).fill_null(mean).to_numpy()
                blocks.append(((x - mean) / std)[:, None])
            else:
                cats: list[str] = p  # type: ignore[assignment]
                index = {v: i for i, v in enumerate(cats)}
                codes = np.array([index.get(str(v) if v is not None else "<null>", -1) for v in s.to_list()])
                onehot = np.zeros((len(df), len(cats)))
                ok = codes >= 0
                onehot[np.flatnonzero(ok), codes[ok]] = 1.0
                blocks.append(onehot)
        X = np.hstack(blocks) if blocks else np.zeros((len(df), 0))
        return np.ascontiguousarray(X, dtype=np.float32)
