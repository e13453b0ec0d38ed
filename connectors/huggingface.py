"""Hugging Face datasets on disk: a ``save_to_disk`` directory or a Hub-layout Parquet folder
(docs/sources/huggingface.md).

``path`` is one directory, local or an fsspec URL (with the source's ``storage_options``). It
holds one of:

* a ``datasets`` ``save_to_disk`` dataset: a ``Dataset`` (``state.json``, ``dataset_info.json``,
  ``data-*.arrow``) or a ``DatasetDict`` (``dataset_dict.json`` and one such directory per split).
  A lone ``Dataset`` is one split, named by its ``state.json`` (``_split``) or ``train`` when it has
  none; it has one configuration, ``dataset_info.json``'s ``config_name`` or ``default``.
* a folder laid out as a Hub dataset repository: a ``README.md`` whose YAML front matter lists
  ``configs:`` (each with ``config_name``, ``data_files`` per split, optionally ``default: true``)
  is followed exactly; without one, ``data/<split>-*.parquet`` or ``data/<split>/*.parquet`` is the
  ``default`` configuration, and ``<config>/<split>-*.parquet`` or ``<config>/<split>/*.parquet``
  are named configurations. A file whose name does not start with a split name belongs to ``train``.

``split`` defaults to ``train`` when there is one, else the only split; ``config`` to the one
marked default, else ``default``, else the only one. An unknown (or ambiguous) split or
configuration is an :class:`InvalidParameterError` listing the ones that exist.

Units are the chosen split's files, sorted; ``__row`` is the 1-based row within the file.

Nothing here touches the network or the ``datasets`` cache: the Arrow files ``save_to_disk``
writes are Arrow IPC streams, read batch by batch with pyarrow (memory-mapped when local), and
Parquet is streamed row group by row group. ``datasets.load_from_disk`` would also memory-map a
local dataset, but copies a remote one to a temporary directory first and needs the library's
feature machinery; pyarrow alone streams both with bounded memory.

``ClassLabel`` columns keep their integer values (the names stay in ``dataset_info.json``), so a
``label:`` column is the label id the dataset was trained with.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import yaml
from fsspec.implementations.local import LocalFileSystem

from connectors.base import Connector
from connectors.files import (
    BATCH_ROWS,
    _is_corrupt_data,
    filesystem,
    fingerprint,
    is_url,
    one_line,
    open_binary,
    parquet_tables,
    store_errors,
)
from curation.exceptions import DataError, InvalidParameterError
from curation.secrets import expand, redact

# a Hub split name (datasets' rule), e.g. train, validation_matched
_SPLIT_NAME = re.compile(r"^[A-Za-z_]\w*(\.\w+)*$")


def split_of_file(filename: str) -> str:
    """The split a Hub-layout file belongs to by its name: ``train-00000-of-00002.parquet`` and
    ``test.parquet`` name theirs; anything else (``0000.parquet``) is ``train``."""
    head = filename.rsplit("/", 1)[-1].split(".parquet")[0].split("-")[0]
    return head if _SPLIT_NAME.match(head) else "train"


class _Tree:
    """The dataset directory, local or behind fsspec, and how its files are named as units."""

    def __init__(self, root: str, source: Any) -> None:
        self.source, self.given = source, root.rstrip("/") or root
        if is_url(root):
            self.fs, base = filesystem(root, source)
            with store_errors(source, root):
                self.fs.invalidate_cache()  # fsspec reuses filesystems: a listing must be fresh
        else:
            self.fs, base = LocalFileSystem(), os.path.abspath(root)
        self.base = base.rstrip("/") or base

    def join(self, *parts: str) -> str:
        return "/".join([self.base, *(p.strip("/") for p in parts if p)])

    def rel(self, path: str) -> str:
        return path[len(self.base) + 1:] if path.startswith(self.base + "/") else path

    def unit(self, path: str) -> str:
        """A unit's name: a local file as a path under ``path`` as written, a remote one as a URL."""
        if is_url(self.given):
            return self.fs.unstrip_protocol(path)
        return os.path.join(self.given, *self.rel(path).split("/"))

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        with store_errors(self.source, self.given):
            return getattr(self.fs, method)(*args, **kwargs)

    def read_text(self, path: str) -> str:
        with store_errors(self.source, self.given), self.fs.open(path, "rb") as f:
            return f.read().decode("utf-8")

    def read_json(self, path: str) -> Any:
        try:
            return json.loads(self.read_text(path))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(f"sources[{self.source.name}]: {redact(self.unit(path))} is not valid JSON: "
                            f"{one_line(exc)}") from None

    def parquet_files(self, path: str) -> list[str]:
        """The visible ``.parquet`` files under ``path`` (a directory), sorted."""
        found = self.call("find", path, detail=True)
        return sorted(p for p, info in found.items() if info.get("type") == "file" and p.endswith(".parquet")
                      and not any(part.startswith((".", "_")) for part in p[len(path) + 1:].split("/")))

    def resolve(self, pattern: str) -> list[str]:
        """The files a README ``data_files`` entry names (a glob, a file or a directory)."""
        path = self.join(pattern)
        if any(c in pattern for c in "*?["):
            found = self.call("glob", path, detail=True)
            return sorted(p for p, info in found.items() if info.get("type") == "file")
        if self.call("isdir", path):
            return self.parquet_files(path)
        return [path] if self.call("isfile", path) else []


class HuggingFaceConnector(Connector, name="huggingface"):
    """A ``save_to_disk`` dataset or a Hub-layout Parquet folder at ``source.path``."""

    # ------------------------------------------------------------------------------ layout
    def _tree(self) -> _Tree:
        path = self.source.path
        field = f"sources[{self.source.name}].path"
        if not isinstance(path, str):
            raise InvalidParameterError(f"{field}: kind 'huggingface' reads one dataset directory; got {path!r}")
        root = expand(path, field=field)  # ${NAME} from the environment, only here
        tree = _Tree(root, self.source)
        if not tree.call("isdir", tree.base):
            where = "" if is_url(root) else f" (relative paths are read from {os.getcwd()!r})"
            raise FileNotFoundError(f"{field}: directory {redact(root)!r} does not exist{where}")
        return tree

    def _layout(self, tree: _Tree) -> tuple[str, dict[str, dict[str, list[str]]], str | None]:
        """``(what it is, {config: {split: [files or patterns]}}, the marked default config)``."""
        if tree.call("isfile", tree.join("dataset_dict.json")):
            splits = tree.read_json(tree.join("dataset_dict.json")).get("splits") or []
            first = tree.join(splits[0]) if splits else tree.base
            return "a save_to_disk DatasetDict", {self._disk_config(tree, first): {s: [tree.join(s)] for s in splits}}, None
        if tree.call("isfile", tree.join("state.json")):
            state = tree.read_json(tree.join("state.json"))
            split = state.get("_split") or "train"
            return "a save_to_disk Dataset", {self._disk_config(tree, tree.base): {split: [tree.base]}}, None
        readme = self._readme_configs(tree)
        if readme is not None:
            return "a Hub-layout folder (README.md configs)", *readme
        configs: dict[str, dict[str, list[str]]] = {}
        data = tree.join("data")
        files = tree.parquet_files(data) if tree.call("isdir", data) else tree.parquet_files(tree.base)
        for f in files:
            parts = tree.rel(f).split("/")
            if parts[0] == "data" or len(parts) == 1:  # data/... or files at the top: the default config
                config, rest = "default", parts[1:] if parts[0] == "data" else parts
            else:
                config, rest = parts[0], parts[1:]
            split = rest[0] if len(rest) > 1 else split_of_file(rest[-1])
            configs.setdefault(config, {}).setdefault(split, []).append(f)
        if not configs:
            raise DataError(f"sources[{self.source.name}].path: {redact(tree.given)!r} holds neither a save_to_disk "
                            "dataset (state.json or dataset_dict.json) nor Parquet files in a Hub layout "
                            "(data/<split>-*.parquet, <config>/<split>-*.parquet); see docs/sources/huggingface.md")
        return "a Hub-layout folder", configs, None

    def _disk_config(self, tree: _Tree, split_dir: str) -> str:
        """A save_to_disk dataset's one configuration: ``dataset_info.json``'s name, or ``default``."""
        info = f"{split_dir}/dataset_info.json"
        if tree.call("isfile", info):
            return tree.read_json(info).get("config_name") or "default"
        return "default"

    def _readme_configs(self, tree: _Tree) -> tuple[dict[str, dict[str, list[str]]], str | None] | None:
        """The ``configs:`` of README.md's YAML front matter as ``{config: {split: [patterns]}}``."""
        readme = tree.join("README.md")
        if not tree.call("isfile", readme):
            return None
        text = tree.read_text(readme)
        if not text.startswith("---"):
            return None
        end = text.find("\n---", 3)
        try:
            meta = yaml.safe_load(text[3:end if end > 0 else None])
        except yaml.YAMLError as exc:
            raise DataError(f"sources[{self.source.name}]: {redact(tree.unit(readme))}: the front matter is not "
                            f"YAML: {one_line(exc)}") from None
        entries = meta.get("configs") if isinstance(meta, dict) else None
        if not entries:
            return None
        configs: dict[str, dict[str, list[str]]] = {}
        default = None
        for entry in entries:
            name = str(entry.get("config_name", "default"))
            data_dir = str(entry.get("data_dir") or "")
            if entry.get("default"):
                default = name
            files = entry.get("data_files")
            if files is None:  # only a data_dir: its splits by file and directory names
                found = tree.parquet_files(tree.join(data_dir))
                splits: dict[str, list[str]] = {}
                for f in found:
                    rest = f[len(tree.join(data_dir)) + 1:].split("/")
                    splits.setdefault(rest[0] if len(rest) > 1 else split_of_file(rest[-1]), []).append(tree.rel(f))
            elif isinstance(files, (str, list)) and all(isinstance(x, str) for x in ([files] if isinstance(files, str)
                                                                                      else files)):
                splits = {"train": [files] if isinstance(files, str) else list(files)}  # the Hub's rule
            elif isinstance(files, list):  # [{split: train, path: data/train-*}, ...]
                splits = {}
                for item in files:
                    paths = item.get("path", [])
                    splits.setdefault(str(item.get("split", "train")), []).extend(
                        [paths] if isinstance(paths, str) else paths)
            elif isinstance(files, dict):  # {train: data/train-*, test: [...]}
                splits = {str(k): [v] if isinstance(v, str) else list(v) for k, v in files.items()}
            else:
                raise DataError(f"sources[{self.source.name}]: {redact(tree.unit(readme))}: config {name!r} has "
                                f"data_files of an unknown shape: {files!r}")
            if files is not None and data_dir:
                splits = {s: [f"{data_dir}/{p}" for p in ps] for s, ps in splits.items()}
            configs[name] = splits
        return configs, default

    def _choose(self, what: str, configs: dict[str, dict[str, list[str]]], default: str | None,
                where: str) -> tuple[str, str]:
        name = self.source.name
        config, split = getattr(self.source, "config", None), getattr(self.source, "split", None)
        listed = ", ".join(sorted(configs))
        if config is None:
            if default is not None:
                config = default
            elif "default" in configs:
                config = "default"
            elif len(configs) == 1:
                config = next(iter(configs))
            else:
                raise InvalidParameterError(f"sources[{name}].config: {where} ({what}) has several configurations "
                                            f"and none is the default: {listed}; set config: to one of them")
        elif config not in configs:
            raise InvalidParameterError(f"sources[{name}].config={config!r} is not a configuration of {where} "
                                        f"({what}); configurations: {listed}")
        splits = configs[config]
        listed = ", ".join(sorted(splits))
        if split is None:
            if "train" in splits:
                split = "train"
            elif len(splits) == 1:
                split = next(iter(splits))
            else:
                raise InvalidParameterError(f"sources[{name}].split: {where} (config {config!r}) has no train split; "
                                            f"splits: {listed}; set split: to one of them")
        elif split not in splits:
            raise InvalidParameterError(f"sources[{name}].split={split!r} is not a split of {where} "
                                        f"(config {config!r}); splits: {listed}")
        return config, split

    def _files(self, tree: _Tree, what: str, entries: list[str], config: str, split: str) -> list[str]:
        where = f"sources[{self.source.name}]: {redact(tree.given)!r} (config {config!r}, split {split!r})"
        if what.startswith("a save_to_disk"):  # the split's directory: state.json lists its Arrow files
            split_dir = entries[0]
            state = tree.read_json(f"{split_dir}/state.json")
            files = [f"{split_dir}/{d['filename']}" for d in state.get("_data_files", [])]
            missing = [f for f in files if not tree.call("isfile", f)]
            if missing:
                raise DataError(f"{where}: state.json lists {redact(tree.unit(missing[0]))}, which does not exist "
                                "(an incomplete copy of the dataset?)")
            if not files:
                raise DataError(f"{where}: state.json lists no data files")
            # save_to_disk names shards data-00000-of-0000N.arrow: sorted is also the dataset's order
            return sorted(files)
        if "README" not in what:  # found by listing the folder: the entries are the files
            return sorted(entries)
        files = []
        for pattern in entries:  # README.md data_files: globs relative to the folder
            found = tree.resolve(pattern)
            if not found:
                raise DataError(f"{where}: data_files entry {pattern!r} matches no file")
            files.extend(found)
        odd = [f for f in files if not f.endswith(".parquet")]
        if odd:
            raise DataError(f"{where}: {redact(tree.unit(odd[0]))} is not Parquet; kind 'huggingface' reads Parquet "
                            "and save_to_disk Arrow files (read CSV or JSON lines with kind: files)")
        return sorted(set(files))

    def units(self) -> list[str]:
        """The chosen split's files, sorted (Arrow files of a save_to_disk split, or Parquet files).

        Raises:
            FileNotFoundError: ``path`` is not a directory.
            InvalidParameterError: an unknown or ambiguous split or configuration (the message lists
                what exists), refused credentials, a missing bucket.
            DataError: the directory is not a dataset, or its metadata names files that do not exist.
        """
        tree = self._tree()
        what, configs, default = self._layout(tree)
        config, split = self._choose(what, configs, default, repr(redact(tree.given)))
        return [tree.unit(f) for f in self._files(tree, what, configs[config][split], config, split)]

    def fingerprints(self) -> list[dict[str, Any]]:
        """Per file: local ``{path, bytes, sha256}``; remote ``{path, bytes, etag | mtime}``."""
        return [fingerprint(u, self.source) for u in self.units()]

    # ----------------------------------------------------------------------------- reading
    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        where = self.location(unit)
        if unit.endswith(".parquet"):
            if not is_url(unit):
                yield from parquet_tables(unit, where, self.source.name)
                return
            with open_binary(unit, self.source) as f:
                yield from parquet_tables(f, where, self.source.name)
            return
        if is_url(unit):
            with open_binary(unit, self.source) as f:
                yield from self._arrow_tables(f, where)
        else:
            with pa.memory_map(unit) as f:  # zero-copy: batches are views of the mapped file
                yield from self._arrow_tables(f, where)

    def _arrow_tables(self, f: Any, where: str) -> Iterator[pa.Table]:
        """An Arrow IPC stream (what save_to_disk writes) or IPC file, as tables of at most about
        :data:`BATCH_ROWS` rows (save_to_disk's batches are small, 1,000 rows by default)."""
        try:
            reader = pa.ipc.open_stream(f)
            schema, batches = reader.schema, iter(reader)
        except pa.ArrowInvalid:
            try:  # the random-access IPC file format
                f.seek(0)
                file_reader = pa.ipc.open_file(f)
            except (pa.ArrowException, OSError) as exc:
                if not _is_corrupt_data(exc):
                    raise
                raise DataError(f"sources[{self.source.name}]: {where} is not an Arrow file: {one_line(exc)}") from None
            schema = file_reader.schema
            batches = (file_reader.get_batch(i) for i in range(file_reader.num_record_batches))
        buffer: list[pa.RecordBatch] = []
        rows = 0
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            except (pa.ArrowException, OSError) as exc:
                if not _is_corrupt_data(exc):
                    raise
                raise DataError(f"sources[{self.source.name}]: {where} is a corrupt Arrow file: "
                                f"{one_line(exc)}") from None
            buffer.append(batch)
            rows += batch.num_rows
            if rows >= BATCH_ROWS:
                yield pa.Table.from_batches(buffer, schema)
                buffer, rows = [], 0
        if buffer:
            yield pa.Table.from_batches(buffer, schema)
