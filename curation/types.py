"""The few value types every stage exchanges.

Rows are referred to by position (an int index into the pool) plus a stable string ``id``.
Invariants are checked on construction so a malformed pool fails where it is made, not deep
inside a selector.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from curation.exceptions import DataError

if TYPE_CHECKING:
    import polars as pl


@dataclass(frozen=True, slots=True)
class Reference:
    """A held-out target set: what the selection should help a model do well on.

    Attributes:
        ids: (m,) string ids (for the report).
        embeddings: (m, d) float32 vectors from the same embedder as the pool.
        labels: (m,) labels, or None when the source has none.
        origin: where it came from, for messages (e.g. ``"held-out fraction 0.1"``).
        groups: (m,) group codes into the pool's ``group_names`` (−1 for a group the pool lacks),
            or None; per-group errors (``group-adaptive``) need them.
    """

    ids: np.ndarray
    embeddings: np.ndarray
    labels: np.ndarray | None = None
    origin: str = "reference"
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        m = len(self.ids)
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != m:
            raise ValueError(f"reference embeddings must have shape (m={m}, d); got {self.embeddings.shape}")
        for name in ("labels", "groups"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != m:
                raise ValueError(f"reference {name} have {len(arr)} rows but ids has {m}")

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True, slots=True)
class Pool:
    """Candidates for selection, row-aligned.

    Attributes:
        ids: (n,) unique string ids (a numpy array, or a polars String Series in a build).
        embeddings: (n, d) float32 C-contiguous vectors (may be (n, 0) when a selector needs none).
        groups: (n,) int codes into ``group_names`` (all zeros and ``("*",)`` when ungrouped).
        group_names: the name of each group code; an intersectional group is "a|b".
        clusters: (n,) int cluster ids, or None before clustering.
        labels: (n,) labels, or None when the source has none.
        texts: (n,) the item texts (a sequence of str: a polars Series in a build) for text sources, else None.
        reference: the target set the pool is judged against (recipe ``reference:``), held out
            of selection; scorers such as ``influence`` and ``knn-shapley`` need it.
        values: (n,) data values from the recipe's ``value:`` stage (higher = more valuable), or None.
        scope: ``(whole, rows)`` when this pool is rows ``rows`` of the pool ``whole`` and quality
            scorers are to judge its items within ``whole`` (see :meth:`part`), else None.

    >>> p = Pool(ids=np.array(["a", "b"]), embeddings=np.zeros((2, 3), np.float32),
    ...          groups=np.array([0, 1]), group_names=("x", "y"))
    >>> len(p), p.group_sizes().tolist()
    (2, [1, 1])
    """

    ids: np.ndarray | pl.Series
    embeddings: np.ndarray
    groups: np.ndarray
    group_names: tuple[str, ...]
    clusters: np.ndarray | None = None
    labels: np.ndarray | None = None
    texts: np.ndarray | None = None
    reference: Reference | None = None
    values: np.ndarray | None = None
    scope: tuple[Pool, np.ndarray] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = len(self.ids)
        if self.scope is not None and len(self.scope[1]) != n:
            raise ValueError(f"scope rows has {len(self.scope[1])} rows but ids has {n}")
        if self.reference is not None and self.reference.embeddings.shape[1] != self.embeddings.shape[1]:
            raise ValueError(f"reference embeddings have dimension {self.reference.embeddings.shape[1]} "
                             f"but the pool's have {self.embeddings.shape[1]}")
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != n:
            raise ValueError(f"embeddings must have shape (n={n}, d); got {self.embeddings.shape}")
        if len(self.groups) != n:
            raise ValueError(f"groups has {len(self.groups)} rows but ids has {n}")
        if n and (self.groups.min() < 0 or self.groups.max() >= len(self.group_names)):
            raise ValueError(f"group codes must lie in [0, {len(self.group_names)}); got {self.groups.min()}..{self.groups.max()}")
        for name in ("clusters", "labels", "texts", "values"):
            arr = getattr(self, name)
            if arr is not None and len(arr) != n:
                raise ValueError(f"{name} has {len(arr)} rows but ids has {n}")

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, rows: np.ndarray) -> Pool:
        """The sub-pool of positions ``rows`` (in that order): every row-aligned field sliced;
        ``group_names`` (so group codes keep their meaning), the cluster ids and the
        ``reference`` are the whole pool's. A composed selection (``select.within``) runs its
        within-group selector on such a sub-pool.

        >>> p = Pool(ids=np.array(["a", "b", "c"]), embeddings=np.eye(3, dtype=np.float32),
        ...          groups=np.array([0, 1, 1]), group_names=("x", "y"))
        >>> q = p.take(np.array([2, 1]))
        >>> q.ids.tolist(), q.groups.tolist(), q.group_names
        (['c', 'b'], [1, 1], ('x', 'y'))
        """
        rows = np.asarray(rows, dtype=np.int64)

        def cut(a):
            return None if a is None else np.asarray(a)[rows]

        texts = self.texts
        if texts is not None:  # a polars Series, a lazily read column (both gather), or any sequence
            texts = texts.gather(rows) if hasattr(texts, "gather") else np.asarray(texts, dtype=object)[rows]
        return Pool(ids=self.ids[rows], embeddings=np.ascontiguousarray(self.embeddings[rows]),
                    groups=self.groups[rows], group_names=self.group_names, clusters=cut(self.clusters),
                    labels=cut(self.labels), texts=texts, reference=self.reference, values=cut(self.values))

    def part(self, rows: np.ndarray) -> Pool:
        """:meth:`take` of ``rows``, whose quality scorers still judge its items within this whole
        pool: a scorer that fits something to the pool it is handed (``influence``'s proxy,
        ``knn-shapley``'s and ``knn-agreement``'s neighbours, ``length``'s normalisation) fits
        it to the whole pool and scores the part's rows there. A composed selection fills each group's quota from such a part:
        the items a group gets go into one training set with every other group's, so an item's
        quality is what it adds to that whole set, not to a model of its group alone.

        >>> p = Pool(ids=np.array(["a", "b", "c"]), embeddings=np.eye(3, dtype=np.float32),
        ...          groups=np.array([0, 1, 1]), group_names=("x", "y"))
        >>> q = p.part(np.array([2, 1]))
        >>> q.ids.tolist(), q.scope[0] is p, q.scope[1].tolist()
        (['c', 'b'], True, [2, 1])
        """
        rows = np.asarray(rows, dtype=np.int64)
        whole, at = (self, rows) if self.scope is None else (self.scope[0], self.scope[1][rows])
        return dataclasses.replace(self.take(rows), scope=(whole, at))

    def group_sizes(self) -> np.ndarray:
        """Rows per group code, shape (len(group_names),)."""
        return np.bincount(self.groups, minlength=len(self.group_names))

    def require_values(self, who: str) -> np.ndarray:
        """The data values as float64, or a DataError saying how to add the ``value:`` stage."""
        if self.values is None:
            raise DataError(f"{who} needs data values: add a `value:` section to the recipe, e.g. "
                            "`value: {method: knn-shapley, k: 5, validation: {fraction: 0.2}}`")
        return np.asarray(self.values, dtype=np.float64)

    def require_reference(self, who: str) -> Reference:
        """The labelled reference set, or a DataError saying how to give one."""
        if self.reference is None or len(self.reference) == 0:
            raise DataError(f"{who} judges items against a reference set: add "
                            "`reference: {fraction: 0.1}` (a held-out share of the pool) or "
                            "`reference: {path: ref.parquet}` to the recipe")
        if self.labels is None or self.reference.labels is None:
            raise DataError(f"{who} needs labels on the pool and the reference rows: "
                            "set sources[].label in the recipe")
        return self.reference

    def encode_labels(self) -> tuple[np.ndarray, np.ndarray, int]:
        """(pool codes, reference codes, number of classes): integer labels over the union of
        the pool's and the reference's labels (compared as strings)."""
        a = np.asarray(self.labels).astype(str)
        b = np.asarray(self.reference.labels).astype(str)
        _, codes = np.unique(np.concatenate([a, b]), return_inverse=True)
        return codes[: len(a)], codes[len(a):], int(codes.max()) + 1


class RowReasons:
    """Per-row reasons made when read: ``make(rows)`` returns the reasons of pool rows ``rows``
    (a slice or an array of positions) as a polars String Series.

    For a selector whose reasons are a format over per-row numbers: the report asks for them a
    block at a time, so the pool's reasons are never held as strings all at once (kmq at 10M
    rows: about 0.9 GB of the select stage's peak). ``make`` must give a row the same reason
    whichever rows it is asked with. Indexing with a position gives one string; a boolean
    mask, an array or a slice gives a Series."""

    __slots__ = ("n", "make")

    def __init__(self, n: int, make: Callable[[slice | np.ndarray], pl.Series]) -> None:
        self.n, self.make = n, make

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, rows: Any) -> Any:
        if isinstance(rows, (int, np.integer)):
            return self.make(np.array([rows if rows >= 0 else self.n + rows]))[0]
        if isinstance(rows, slice):
            return self.make(slice(*rows.indices(self.n))).alias("reason")
        rows = np.asarray(rows)
        return self.make(np.flatnonzero(rows) if rows.dtype == bool else rows).alias("reason")

    def to_list(self) -> list[str]:
        return self[:].to_list()

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_list())


@dataclass(frozen=True, slots=True)
class Selection:
    """What a selector chose, and why.

    Attributes:
        indices: (budget,) distinct positions into the pool, in pick order.
        reasons: (n,) one human-readable reason per pool row (selected or not), as an array, a
            polars String Series or :class:`RowReasons` (made a block at a time when read), or
            None to let the caller write a generic one.
        scores: optional (n,) per-row score the selector used (NaN where unscored).
        info: small JSON-able facts for the summary (e.g. per-group quotas).
        columns: extra (n,) per-row columns for the report (e.g. ``round``, ``quality``); each
            must be declared in the selector's ``report_columns``.
        reason_codes: optional (n,) short machine codes (``[a-z][a-z0-9_]*``) for the report's
            ``reason_code`` column, each declared in the selector's ``reason_codes``; None means
            ``selected``/``not_selected`` (see :mod:`curation.report_schema`).
    """

    indices: np.ndarray
    reasons: np.ndarray | pl.Series | RowReasons | None = None
    scores: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    reason_codes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.indices.ndim != 1:
            raise ValueError(f"indices must be 1-D; got shape {self.indices.shape}")
        if len(np.unique(self.indices)) != len(self.indices):
            raise ValueError("indices contain duplicates")

    def mask(self, n: int) -> np.ndarray:
        """Boolean (n,) mask of the selected rows."""
        m = np.zeros(n, dtype=bool)
        m[self.indices] = True
        return m
