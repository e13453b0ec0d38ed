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
from collections.abc import Iterator
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
    """The version LATEST names (falling back to the newest complete one)."""
    d = Path(dataset_dir)
    marker = d / "LATEST"
    if marker.is_file():
        name = marker.read_text().strip()
        if (d / name / "manifest.json").is_file():
            return name
    versions = list_versions(d)
    return versions[-1] if versions else None


def resolve_version(dataset_dir: str | os.PathLike, version: str | None = None) -> Path:
    """The directory of ``version`` (default: the latest).

    Raises:
        CurationError: no such dataset or version (the message lists what exists).
    """
    d = Path(dataset_dir)
    versions = list_versions(d)
    if not versions:
        raise CurationError(f"{str(d)!r} holds no published version (expected {d}/v0001/manifest.json)")
    name = version or latest_version(d)
    if name not in versions:
        raise CurationError(f"version {name!r} not found in {str(d)!r}; versions: {', '.join(versions)}")
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


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    # Fixed writer settings and no wall-clock metadata: identical tables give identical bytes.
    pq.write_table(df.to_arrow(), path, compression="zstd", write_statistics=True)


def publish_version(
    dataset_dir: str | os.PathLike,
    data: pl.DataFrame,
    report: pl.DataFrame,
    manifest: dict[str, Any],
    *,
    rows_per_shard: int = 100_000,
) -> Path:
    """Write a new version atomically and point LATEST at it; returns the version directory.

    ``manifest`` gets ``version``, ``parent`` (the version LATEST named before) and ``files``
    (sha256 and bytes of every file, which :func:`verify_version` checks) filled in.
    """
    d = Path(dataset_dir)
    d.mkdir(parents=True, exist_ok=True)
    # a killed publish leaves its temporary directory: the next publish removes it (the owner's
    # pid is in the name, so a live concurrent writer's directory is left alone)
    remove_stale_tmp(d)
    tmp = d / tmp_name()
    try:
        (tmp / "data").mkdir(parents=True)
        n_shards = max(1, -(-data.height // rows_per_shard))
        for i in range(n_shards):
            _write_parquet(data.slice(i * rows_per_shard, rows_per_shard), tmp / "data" / f"part-{i:05d}.parquet")
        _write_parquet(report, tmp / "report.parquet")
        files = {}
        for f in sorted(p for p in tmp.rglob("*") if p.is_file()):
            files[f.relative_to(tmp).as_posix()] = {"sha256": sha256_file(f), "bytes": f.stat().st_size}
        parent = latest_version(d)
        for _ in range(100):  # another build may take the same number meanwhile: try the next one
            existing = [p.name for p in d.iterdir() if VERSION_RE.match(p.name)]
            number = max((int(n[1:]) for n in existing), default=0) + 1
            name = f"v{number:04d}"
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


def verify_version(version_dir: str | os.PathLike) -> list[str]:
    """Files whose sha256 or size differs from the manifest (empty list = intact)."""
    v = Path(version_dir)
    manifest = json.loads((v / "manifest.json").read_text())
    bad = []
    for rel, meta in manifest["files"].items():
        f = v / rel
        if not f.is_file() or f.stat().st_size != meta["bytes"] or sha256_file(f) != meta["sha256"]:
            bad.append(rel)
    return bad
