"""The Connector interface: a source of rows as Arrow record batches.

A connector is made from one recipe source (its ``SourceConfig``). ``units()`` lists the
files, tables or partitions in a stable, sorted order (the same on every worker);
``iter_batches()`` yields Arrow tables with the source's own columns plus two location columns
(:data:`UNIT_COL`, :data:`ROW_COL`) that say where each row came from, so a skipped row can be
found even when it has no id. Rows a connector cannot decode at all (a malformed JSON line,
say) are recorded with :meth:`Connector.skip` (reason, unit, row); everything else is left to
ingestion, which applies the recipe's column mapping and types.

Errors, so the build treats them right:

* ``OSError`` (``ConnectionError``, ``TimeoutError``, ...): the source may be reachable later;
  the flow retries the read (:class:`curation.exceptions.SourceReadError`).
* :class:`curation.exceptions.DataError`: the data cannot be used as the recipe says (a missing
  column, schema drift, a file that is not what its name says): one line naming the source,
  the unit (file, table) and, where known, the line; never retried.
* :class:`curation.exceptions.InvalidParameterError`: the source's settings are wrong (a query
  that writes, wrong credentials, a missing bucket); never retried.

Messages must not carry secrets: pass URLs through :func:`curation.secrets.redact`.

Built-in connectors register by name (``class X(Connector, name="files")``); third-party
packages plug in through the entry-point group ``curation.connectors`` (see docs/sources/README.md).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from curation.ingest import ROW_COL, UNIT_COL
from curation.registry import Registered, Registry
from curation.secrets import redact


def int64_array(values: np.ndarray) -> pa.Array:
    """``pa.array(values)`` for integers, built on the array's own buffer: ``pa.array`` on a
    NumPy array imports pandas the first time it runs (0.3-0.6 s of every build's start)."""
    values = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def repeated_string(value: str, n: int) -> pa.Array:
    """``n`` copies of ``value`` as a dictionary array (one entry, ``n`` zero indices), built on
    buffers: ``pa.scalar`` would import pandas, as :func:`int64_array` says. Polars reads it as a
    categorical column, so a location's unit costs 4 bytes per row, not a copy of its path."""
    data = value.encode()
    entry = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, len(data)], np.int32)),
                                                   pa.py_buffer(data)])
    indices = pa.Array.from_buffers(pa.int32(), n, [None, pa.py_buffer(np.zeros(n, np.int32))])
    return pa.DictionaryArray.from_arrays(indices, entry)


class Connector(Registered, ABC):
    """Reads one recipe source. Subclasses implement ``units`` and ``_read_unit``."""

    registry: ClassVar[Registry] = Registry("connector kind", "curation.connectors", builtins="connectors",
                                            lazy={"sql": "connectors.sql"})

    def __init__(self, source: Any) -> None:
        self.source = source  # a curation.recipe.SourceConfig (or anything with the same fields)
        self.skipped: Counter[str] = Counter()
        self.skipped_rows: list[dict[str, Any]] = []  # {"reason", "unit", "row"} of undecodable rows

    @abstractmethod
    def units(self) -> list[str]:
        """Stable, sorted list of input units (files, partitions)."""

    @abstractmethod
    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        """Yield the rows of one unit as Arrow tables (a :data:`ROW_COL` column is optional)."""

    def check(self) -> None:
        """Cheap checks before any work (the build's preflight): the units exist and can be
        opened. Raises as :meth:`units` does. The default lists the units."""
        self.units()

    def fingerprints(self) -> list[dict[str, Any]]:
        """What identifies the inputs, per unit, for the manifest and the "nothing changed"
        check (e.g. path, bytes, sha256 or etag; a table's row count). Must change when the
        rows change and must not carry secrets."""
        return [{"unit": self.location(u)} for u in self.units()]

    def location(self, unit: str) -> str:
        """How ``unit`` is named in the report's ``location`` column and in messages."""
        return redact(unit)

    def skip(self, reason: str, unit: str, row: int | None = None) -> None:
        """Record a row that could not be decoded at all (it reaches the report as skipped)."""
        self.skipped[reason] += 1
        self.skipped_rows.append({"reason": reason, "unit": self.location(unit), "row": row})

    def iter_batches(self, shard: int = 0, num_shards: int = 1) -> Iterator[pa.Table]:
        """Rows of this shard's units (``units[shard::num_shards]``) with their location columns,
        honouring ``source.limit``."""
        limit = getattr(self.source, "limit", None)
        seen = 0
        for unit in self.units()[shard::num_shards]:
            where, offset = self.location(unit), 0
            for table in self._read_unit(unit):
                n = table.num_rows
                if ROW_COL not in table.column_names:
                    table = table.append_column(ROW_COL, int64_array(np.arange(offset + 1, offset + n + 1)))
                table = table.append_column(UNIT_COL, repeated_string(where, n))
                offset += n
                if limit is not None and seen + n > limit:
                    table = table.slice(0, limit - seen)
                seen += table.num_rows
                if table.num_rows:
                    yield table
                if limit is not None and seen >= limit:
                    return
