"""The Connector interface: a source of rows as Arrow record batches.

A connector is made from one recipe source (its ``SourceConfig``). ``units()`` lists the
files or partitions in a stable, sorted order (the same on every worker); ``iter_batches()``
yields Arrow tables with the source's own columns. Rows a connector cannot decode at all
(malformed JSON lines, say) are skipped and counted in ``skipped`` by reason; everything else
is left to ingestion, which applies the recipe's column mapping.

Built-in connectors register by name (``class X(Connector, name="files")``); third-party
packages plug in through the entry-point group ``curation.connectors``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa

from curation.registry import Registered, Registry


class Connector(Registered, ABC):
    """Reads one recipe source. Subclasses implement ``units`` and ``_read_unit``."""

    registry: ClassVar[Registry] = Registry("connector kind", "curation.connectors", builtins="connectors")

    def __init__(self, source: Any) -> None:
        self.source = source  # a curation.recipe.SourceConfig (or anything with the same fields)
        self.skipped: Counter[str] = Counter()

    @abstractmethod
    def units(self) -> list[str]:
        """Stable, sorted list of input units (files, partitions)."""

    @abstractmethod
    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        """Yield the rows of one unit as Arrow tables."""

    def fingerprints(self) -> list[dict[str, Any]]:
        """What identifies the inputs for the manifest (e.g. path, bytes, sha256)."""
        return [{"unit": u} for u in self.units()]

    def iter_batches(self, shard: int = 0, num_shards: int = 1) -> Iterator[pa.Table]:
        """Rows of this shard's units (``units[shard::num_shards]``), honouring ``source.limit``."""
        limit = getattr(self.source, "limit", None)
        seen = 0
        for unit in self.units()[shard::num_shards]:
            for table in self._read_unit(unit):
                if limit is not None and seen + table.num_rows > limit:
                    table = table.slice(0, limit - seen)
                seen += table.num_rows
                if table.num_rows:
                    yield table
                if limit is not None and seen >= limit:
                    return
