"""``kind: lines``: every non-empty line of plain text files is one row.

A recipe source::

    - name: notes
      kind: lines
      path: notes/*.txt            # a file or a glob
      text: line                   # the column this connector yields
      options: {min_chars: 3}      # this connector's own settings (optional)

Rows have the columns ``line`` (the text, without its newline) and ``file`` (the file's name);
the location of each row is its line number, so a skipped line can be found in the file.
"""

from __future__ import annotations

import glob
import hashlib
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from connectors import Connector
from curation.exceptions import InvalidParameterError
from curation.ingest import ROW_COL

__all__ = ["LinesConnector"]


class LinesConnector(Connector, name="lines"):
    """Plain text files, one row per non-empty line (``options.min_chars``: shorter lines are skipped)."""

    def _options(self) -> dict[str, Any]:
        options = dict(self.source.options or {})
        unknown = set(options) - {"min_chars"}
        if unknown:
            raise InvalidParameterError(f"sources[{self.source.name}].options: unknown key(s) {sorted(unknown)}; "
                                        "this connector knows min_chars")
        return options

    def units(self) -> list[str]:
        self._options()
        if not self.source.path:
            raise InvalidParameterError(f"sources[{self.source.name}]: kind 'lines' needs `path` (a file or a glob)")
        files = sorted(glob.glob(self.source.path)) if glob.has_magic(self.source.path) else [self.source.path]
        missing = [f for f in files if not os.path.isfile(f)]
        if not files or missing:
            raise FileNotFoundError(f"sources[{self.source.name}].path: no file at {self.source.path!r}")
        return files

    def fingerprints(self) -> list[dict[str, Any]]:
        return [{"path": os.path.abspath(u), "sha256": hashlib.sha256(open(u, "rb").read()).hexdigest()}
                for u in self.units()]

    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        min_chars = int(self._options().get("min_chars", 1))
        lines, numbers = [], []
        with open(unit, "rb") as f:
            for number, raw in enumerate(f, start=1):
                try:
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError:
                    self.skip("invalid_utf8", unit, number)
                    continue
                if len(line.strip()) < min_chars:
                    continue
                lines.append(line)
                numbers.append(number)
        yield pa.table({"line": lines, "file": [os.path.basename(unit)] * len(lines), ROW_COL: numbers})
