"""Immutable, versioned output.

Layout under ``<root>/<dataset>/``::

    v0001/
      data/part-00000.parquet ...   selected items: their columns plus selection fields
      report.parquet                one row per candidate (selected or not, skipped included)
      manifest.json                 recipe + sha256, inputs, seed, code version, counts,
                                    per-file sha256 and bytes, stage timings, summary
    LATEST                          name of the newest complete version

A version is written into a hidden temporary directory and renamed into place only when
complete, so a failed run publishes nothing and readers never see half a version. Shards are
written with fixed settings and no timestamps, so the same inputs give the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from curation.exceptions import CurationError, DatasetLocked
from curation.stages import remove_stale_tmp, tmp_name

VERSION_RE = re.compile(r"^v(\d{4,})$")


LOCK_FILE = ".build.lock"


@contextmanager
def dataset_lock(dataset_dir: str | os.PathLike, *, wait: bool = True) -> Iterator[None]:
    """Hold the dataset's one-writer lock (``<dataset_dir>/.build.lock``) for the block.

    One build per dataset at a time: a second build waits, saying so once on stderr, or with
    ``wait=False`` raises :class:`DatasetLocked` at once. The lock is an OS file lock
    (``filelock``): a killed holder releases it with its process, so it never goes stale.
    Re-entrant within a process (the CLI takes it before starting Prefect, the flow again).
    """
    from filelock import FileLock, Timeout

    d = Path(dataset_dir)
    d.mkdir(parents=True, exist_ok=True)
    lock = FileLock(d / LOCK_FILE, is_singleton=True, thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        if not wait:
            raise DatasetLocked(f"dataset {str(d)!r} is being built by another process: run again when it is done, "
                                "or without --no-wait to wait for it") from None
        print(f"waiting for another build of {str(d)!r} to finish (--no-wait fails at once instead)",
              file=sys.stderr, flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def list_versions(dataset_dir: str | os.PathLike) -> list[str]:
    """Complete versions, oldest first."""
    d = Path(dataset_dir)
    if not d.is_dir():
        return []
    names = [p.name for p in d.iterdir() if p.is_dir() and VERSION_RE.match(p.name) and (p / "manifest.json").is_file()]
    return sorted(names, key=lambda n: int(n[1:]))


def latest_version(dataset_dir: str | os.PathLike) -> str | None:
    """The version LATEST names (the newest complete one when there is no LATEST).

    Raises:
        CurationError: LATEST names a version that does not exist or is incomplete (one line
            naming the file, what exists and the fix): never a silent fallback to another one.
    """
    d = Path(dataset_dir)
    marker = d / "LATEST"
    versions = list_versions(d)
    if marker.is_file():
        name = marker.read_text().strip()
        if name not in versions:
            raise CurationError(f"{marker} names {name!r}, which is not a complete version (versions: "
                                f"{', '.join(versions) or 'none'}); write the right one into it, or delete it "
                                "to use the newest")
        return name
    return versions[-1] if versions else None


def resolve_version(dataset_dir: str | os.PathLike, version: str | None = None, *, check: bool = True) -> Path:
    """The directory of ``version`` (default: the latest), checked cheaply against its manifest
    (:func:`check_version`) unless ``check`` is off.

    Raises:
        CurationError: no such dataset or version (the message lists what exists), or a version
            whose files do not match its manifest (the first problem, and how many more).
    """
    d = Path(dataset_dir)
    versions = list_versions(d)
    if not versions:
        raise CurationError(f"{str(d)!r} holds no published version (expected {d}/v0001/manifest.json)")
    name = version or latest_version(d)
    if name not in versions:
        raise CurationError(f"version {name!r} not found in {str(d)!r}; versions: {', '.join(versions)}")
    if check:
        problems = check_version(d / name)
        if problems:
            more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
            raise CurationError(f"{problems[0]}{more}; refusing to read {name}: `curate verify {d} --version {name}` "
                                "lists everything")
    return d / name


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def code_version() -> str:
    """Package version plus the git commit of the checkout when there is one."""
    from curation.version import __version__ as v

    try:
        here = Path(__file__).resolve().parent
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=here, capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if sha:
            v += f"+g{sha}" + (".dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return v


#: Parquet key-value metadata every published file carries, so a shard on its own says where it
#: came from (read it with ``pyarrow.parquet.read_metadata(path).metadata``).
META_DATASET, META_VERSION, META_RECIPE = b"curation.dataset", b"curation.version", b"curation.recipe_sha256"


def write_parquet(frames: pl.DataFrame | Iterable[pl.DataFrame], path: Path,
                  stamp: dict[bytes, bytes] | None = None) -> int:
    """Write ``frames`` (one frame, or blocks of one table written one after another as row
    groups, so a large report is never held whole); returns the row count. Fixed writer
    settings and no wall-clock metadata: identical tables with the same stamp give identical
    bytes.

    Raises:
        ValueError: a block's columns differ from the first block's.
    """
    writer, rows = None, 0
    try:
        for df in [frames] if isinstance(frames, pl.DataFrame) else frames:
            table = df.to_arrow()
            if stamp:
                table = table.replace_schema_metadata({**(table.schema.metadata or {}), **stamp})
            if writer is None:  # what pq.write_table(table, path, ...) does, one block at a time
                writer = pq.ParquetWriter(path, table.schema, compression="zstd", write_statistics=True)
            writer.write_table(table)
            rows += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        raise ValueError(f"nothing to write to {path.name}: no blocks")
    return rows


def publish_version(
    dataset_dir: str | os.PathLike,
    data: pl.DataFrame,
    report: pl.DataFrame | Callable[[], Iterable[pl.DataFrame]],
    manifest: dict[str, Any],
    *,
    rows_per_shard: int = 100_000,
) -> Path:
    """Write a new version atomically and point LATEST at it; returns the version directory.

    ``report`` is the report table, or a function returning its blocks in order (called once
    per attempt), so a report larger than memory streams from its stage file to the version.

    ``manifest`` gets ``version``, ``parent`` (the version LATEST named before) and ``files``
    (sha256, bytes and, for Parquet, rows of every file, which :func:`check_version` checks)
    filled in. Every Parquet file is stamped with the dataset, the version and the recipe's
    sha256 (:data:`META_VERSION` ...). Call it holding the dataset's lock
    (:func:`dataset_lock`), as the build does: the version number is chosen before writing.
    """
    d = Path(dataset_dir)
    d.mkdir(parents=True, exist_ok=True)
    # a killed publish leaves its temporary directory: the next publish removes it (the owner's
    # pid is in the name, so a live concurrent writer's directory is left alone)
    remove_stale_tmp(d)
    parent = latest_version(d)
    tmp = d / tmp_name()
    try:
        for _ in range(100):  # a writer without the lock may take the number meanwhile: the next one
            existing = [p.name for p in d.iterdir() if VERSION_RE.match(p.name)]
            name = f"v{max((int(n[1:]) for n in existing), default=0) + 1:04d}"
            stamp = {META_DATASET: str(manifest.get("name", d.name)).encode(), META_VERSION: name.encode(),
                     META_RECIPE: str(manifest.get("recipe_sha256", "")).encode()}
            shutil.rmtree(tmp, ignore_errors=True)
            (tmp / "data").mkdir(parents=True)
            rows: dict[str, int] = {}
            n_shards = max(1, -(-data.height // rows_per_shard))
            for i in range(n_shards):
                rel = f"data/part-{i:05d}.parquet"
                rows[rel] = write_parquet(data.slice(i * rows_per_shard, rows_per_shard), tmp / rel, stamp)
            rows["report.parquet"] = write_parquet(report if isinstance(report, pl.DataFrame) else report(),
                                                    tmp / "report.parquet", stamp)
            files = {}
            for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
                rel = f.relative_to(tmp).as_posix()
                files[rel] = {"sha256": sha256_file(f), "bytes": f.stat().st_size,
                              **({"rows": rows[rel]} if rel in rows else {})}
            manifest = {**manifest, "version": name, "parent": parent, "files": files}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=False, default=str) + "\n")
            try:
                os.rename(tmp, d / name)
                break
            except OSError:
                if not (d / name).exists():
                    raise
        else:  # pragma: no cover - 100 concurrent builds of one dataset
            raise CurationError(f"could not find a free version number in {d}")
        marker = d / f".LATEST-{uuid.uuid4().hex}"
        marker.write_text(name + "\n")
        os.replace(marker, d / "LATEST")
        return d / name
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_manifest(version_dir: str | os.PathLike) -> dict[str, Any]:
    """A version's manifest.

    Raises:
        CurationError: one line naming the file when it is missing, not JSON (e.g. truncated)
            or lacks the ``files`` table.
    """
    path = Path(version_dir) / "manifest.json"
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise CurationError(f"{path}: missing; the version is incomplete (rebuild it, or remove the directory)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CurationError(f"{path}: not valid JSON ({exc.__class__.__name__} at byte "
                            f"{getattr(exc, 'pos', '?')}; truncated?); `curate verify` checks the rest") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise CurationError(f"{path}: has no `files` table; not a manifest this tool wrote")
    return manifest


def check_version(version_dir: str | os.PathLike, *, full: bool = False) -> list[str]:
    """Problems of a version, one line each naming the file (empty list: intact).

    The cheap check (every read does it): the manifest parses, every file it lists exists with
    its size, every Parquet file's row count (from its footer) is the manifest's, and ``data/``
    holds no shard the manifest does not list. ``full`` (``curate verify``) also recomputes
    every file's sha256.
    """
    v = Path(version_dir)
    try:
        manifest = read_manifest(v)
    except CurationError as exc:
        return [str(exc)]
    problems = []
    for rel, meta in manifest["files"].items():
        f = v / rel
        if not f.is_file():
            problems.append(f"{f}: missing (the manifest lists it)")
            continue
        size = f.stat().st_size
        if size != meta.get("bytes"):
            problems.append(f"{f}: {size} bytes, the manifest says {meta.get('bytes')}")
            continue
        if "rows" in meta:
            try:
                rows = pq.read_metadata(f).num_rows
            except Exception as exc:  # pyarrow: not Parquet any more
                problems.append(f"{f}: unreadable as Parquet ({type(exc).__name__})")
                continue
            if rows != meta["rows"]:
                problems.append(f"{f}: {rows} rows, the manifest says {meta['rows']}")
                continue
        if full and sha256_file(f) != meta.get("sha256"):
            problems.append(f"{f}: sha256 differs from the manifest (the bytes changed)")
    if (v / "data").is_dir():
        for f in sorted((v / "data").iterdir()):
            if f"data/{f.name}" not in manifest["files"]:
                problems.append(f"{f}: not in the manifest (a shard added after publishing)")
    return problems


def verify_version(version_dir: str | os.PathLike) -> list[str]:
    """Files whose sha256, size or row count differs from the manifest, or that are missing
    (relative paths; empty list = intact). :func:`check_version` says what is wrong with each."""
    v = Path(version_dir)
    manifest = read_manifest(v)
    bad = []
    for rel, meta in manifest["files"].items():
        f = v / rel
        if not f.is_file() or f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            bad.append(rel)
    return bad
