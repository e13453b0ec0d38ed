"""Local files: Parquet, JSONL and CSV; one path, a glob, or a list of either.

* Parquet is streamed row group by row group.
* CSV is streamed in blocks; the text column is read as bytes so one bad byte sequence skips one
  row instead of failing the file.
* JSONL is read line by line; a line that is not UTF-8 or not a JSON object is skipped and
  counted (``invalid_utf8``, ``malformed_json``).
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from connectors.base import Connector
from curation.ingest import ROW_COL
from curation.secrets import expand

_EXT = {".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv"}
BATCH_ROWS = 65_536


class FilesConnector(Connector, name="files"):
    """Parquet / JSONL / CSV files named by ``source.path``."""

    def units(self) -> list[str]:
        paths = self.source.path if isinstance(self.source.path, list) else [self.source.path]
        field = f"sources[{self.source.name}].path"
        paths = [expand(p, field=field) for p in paths]  # ${NAME} from the environment, only here
        out: list[str] = []
        for p in paths:
            if glob.has_magic(p):
                matches = sorted(m for m in glob.glob(p, recursive=True) if os.path.isfile(m))
                if not matches:
                    raise FileNotFoundError(f"sources[{self.source.name}].path: no file matches the glob {p!r}")
                out.extend(matches)
            elif os.path.isdir(p):
                files = sorted(
                    os.path.join(r, f) for r, _, fs in os.walk(p) for f in fs if os.path.splitext(f)[1] in _EXT
                )
                if not files:
                    raise FileNotFoundError(f"sources[{self.source.name}].path: directory {p!r} holds no data files")
                out.extend(files)
            elif not os.path.isfile(p):
                raise FileNotFoundError(
                    f"sources[{self.source.name}].path: file {p!r} does not exist "
                    f"(relative paths are read from {os.getcwd()!r})"
                )
            else:
                out.append(p)
        return out

    def fingerprints(self) -> list[dict[str, Any]]:
        out = []
        for u in self.units():
            h = hashlib.sha256()
            with open(u, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out.append({"path": os.path.abspath(u), "bytes": os.path.getsize(u), "sha256": h.hexdigest()})
        return out

    def format_of(self, unit: str) -> str:
        if self.source.format:
            return self.source.format
        ext = os.path.splitext(unit)[1].lower()
        if ext not in _EXT:
            raise ValueError(
                f"sources[{self.source.name}]: cannot tell the format of {unit!r} from its extension; "
                "set format: parquet | jsonl | csv"
            )
        return _EXT[ext]

    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        fmt = self.format_of(unit)
        if fmt == "parquet":
            pf = pq.ParquetFile(unit)
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                yield pa.Table.from_batches([batch])
        elif fmt == "csv":
            text = self.source.text
            # an empty field is a missing value (null text is skipped and counted downstream)
            convert = pacsv.ConvertOptions(column_types={text: pa.binary()} if text else {}, strings_can_be_null=True)
            reader = pacsv.open_csv(unit, convert_options=convert, read_options=pacsv.ReadOptions(block_size=1 << 22))
            for batch in reader:
                yield pa.Table.from_batches([batch])
        else:
            yield from self._read_jsonl(unit)

    def _read_jsonl(self, unit: str) -> Iterator[pa.Table]:
        rows: list[dict[str, Any]] = []
        lines: list[int] = []  # each row's line number: the report's location

        def table() -> pa.Table:
            t = pa.Table.from_pylist(rows)
            return t.append_column(ROW_COL, pa.array(lines, pa.int64()))

        with open(unit, "rb") as f:
            for line_no, raw in enumerate(f, start=1):
                if not raw.strip():
                    continue
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    self.skip("invalid_utf8", unit, line_no)
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    self.skip("malformed_json", unit, line_no)
                    continue
                if not isinstance(row, dict):
                    self.skip("malformed_json", unit, line_no)
                    continue
                rows.append(row)
                lines.append(line_no)
                if len(rows) >= BATCH_ROWS:
                    yield table()
                    rows, lines = [], []
        if rows:
            yield table()
