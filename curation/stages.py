"""The content-addressed stage store: finished stage outputs, reused by later builds.

A build's stages (ingest, embed, cluster, value, select) each write their output into a
directory ``<output.root>/.stages/<stage>/<key>/``: the stage's files plus ``record.json``
(the stage's facts, e.g. row counts or the embedder id). The key is a hash of everything the
output depends on (see :func:`stage_key`): the stage's name and version, the recipe sections it
reads, and the keys of the stages it reads from. So a directory that exists is the output of
that computation, and a rerun — after a crash, or with a recipe that changed only later
stages — reuses it instead of computing it again.

Writes are atomic: a stage writes into a temporary sibling directory named after the host and
process (``.tmp-<host>-<pid>-<random>``) and renames it into place when complete, so a killed
run leaves at most a temporary directory, never a half-written entry. Two builds racing on the
same key both compute it and the second rename loses; the loser uses the winner's entry.

Garbage collection (:meth:`StageStore.collect`) removes temporary directories whose process is
gone, then entries not used for ``max_age_days``, then the least recently used entries until
the store is under ``max_bytes``. Entries the current build uses are never removed, and
nothing is removed because a run failed: a failed build's finished stages are exactly what its
rerun wants. See docs/architecture.md#build-stages-and-the-stage-store.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE_DIR = ".stages"
RECORD = "record.json"
TMP_PREFIX = ".tmp-"


def stage_key(name: str, version: int, sections: Mapping[str, Any], inputs: Mapping[str, str]) -> str:
    """The content address of one stage output (24 hex digits of a sha256).

    Args:
        name, version: the stage; a stage's version is bumped whenever its code changes what it
            writes, so outputs of older code are not reused.
        sections: the recipe values the stage reads (JSON-able), e.g. ``{"cluster": {...}, "seed": 1}``.
        inputs: the keys of the stage outputs it reads, by stage name.
    """
    doc = {"stage": name, "version": version, "sections": sections, "inputs": dict(sorted(inputs.items()))}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def tmp_name() -> str:
    """A temporary directory name that says which process owns it (see :func:`remove_stale_tmp`)."""
    return f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def remove_stale_tmp(directory: Path, *, other_hosts_after: float = 86_400.0) -> list[Path]:
    """Remove temporary directories and files left by dead processes; returns what was removed.

    A temporary entry of this host whose process is gone is removed at once; one of another
    host (shared storage) only when untouched for ``other_hosts_after`` seconds, since its
    process may be alive over there. Directories of the old unnamed form (``.tmp-<hex>``) are
    treated like another host's.
    """
    removed = []
    if not directory.is_dir():
        return removed
    host = socket.gethostname()
    now = time.time()
    for p in directory.iterdir():
        if not p.name.startswith(TMP_PREFIX):
            continue
        owner, _, rest = p.name[len(TMP_PREFIX):].rpartition("-")[0].rpartition("-")
        pid = int(rest) if rest.isdigit() else None
        if owner == host and pid is not None:
            stale = not _pid_alive(pid)
        else:
            stale = now - p.stat().st_mtime > other_hosts_after
        if stale:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            removed.append(p)
    return removed


@dataclass(frozen=True)
class StageRun:
    """What happened to one stage in one build: its key, directory, and whether it was reused."""

    name: str
    key: str
    dir: Path
    reused: bool
    seconds: float
    record: dict[str, Any]


class StageStore:
    """Stage outputs under ``<root>/.stages``; see the module docstring."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root) / STORE_DIR

    def entry(self, name: str, key: str) -> Path:
        return self.root / name / key

    def lookup(self, name: str, key: str) -> Path | None:
        """The entry's directory when it is complete, else None."""
        d = self.entry(name, key)
        return d if (d / RECORD).is_file() else None

    def run(self, name: str, key: str, produce: Callable[[Path], dict[str, Any]]) -> StageRun:
        """Reuse the entry ``name/key`` or make it with ``produce(directory) -> record``.

        ``produce`` writes its files into the directory it is given and returns the stage's
        facts (JSON-able). On reuse the entry's modification time is refreshed: that is its
        "last used" time for garbage collection.
        """
        t0 = time.perf_counter()
        found = self.lookup(name, key)
        if found is not None:
            os.utime(found / RECORD)
            record = json.loads((found / RECORD).read_text())
            return StageRun(name, key, found, True, round(time.perf_counter() - t0, 3), record)
        parent = self.root / name
        parent.mkdir(parents=True, exist_ok=True)
        tmp = parent / tmp_name()
        tmp.mkdir()
        try:
            # through JSON once, so a computed record equals the one a later build reads back
            record = json.loads(json.dumps(produce(tmp), default=str))
            (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
            final = self.entry(name, key)
            try:
                os.rename(tmp, final)
            except OSError:
                if self.lookup(name, key) is None:  # not a lost race: a real error
                    raise
                record = json.loads((final / RECORD).read_text())
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return StageRun(name, key, final, False, round(time.perf_counter() - t0, 3), record)

    def entries(self) -> list[tuple[Path, float, int]]:
        """Every complete entry as (directory, last used, bytes)."""
        out = []
        if not self.root.is_dir():
            return out
        for stage in self.root.iterdir():
            if not stage.is_dir():
                continue
            for d in stage.iterdir():
                rec = d / RECORD
                if d.name.startswith(TMP_PREFIX) or not rec.is_file():
                    continue
                size = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
                out.append((d, rec.stat().st_mtime, size))
        return out

    def collect(self, *, max_age_days: float, max_bytes: int, keep: Iterable[Path] = ()) -> list[Path]:
        """Garbage-collect the store; returns the removed directories (see the module docstring)."""
        removed: list[Path] = []
        if self.root.is_dir():
            for stage in self.root.iterdir():
                if stage.is_dir():
                    removed += remove_stale_tmp(stage)
        protected = {Path(p).resolve() for p in keep}
        now = time.time()
        entries = sorted(self.entries(), key=lambda e: e[1])  # least recently used first
        total = sum(size for _, _, size in entries)
        for d, used, size in entries:
            if d.resolve() in protected:
                continue
            if now - used > max_age_days * 86_400 or total > max_bytes:
                shutil.rmtree(d, ignore_errors=True)
                removed.append(d)
                total -= size
        return removed
