"""Keeping a build's memory bounded: memory-mapped vector matrices read and written without
staying resident in the process, and freed heap handed back to the OS between stages.

(Allocator settings that must be in place before polars and pyarrow load are set in
``curation/__init__.py``.)

A stage reads the pool's vectors from the memory-mapped ``embeddings.npy`` (see
:class:`curation.builder.Embedded`). Every page it touches stays mapped into the process until
the mapping is closed, so a pass over all rows raises the process's resident set (RSS) by the
whole matrix, 1.5 GB for a million 384-dimensional vectors, although the kernel could drop
those pages at any time. :func:`release` unmaps the pages of a range of rows from the process
(``madvise(MADV_DONTNEED)``): for a shared file mapping the data, written or not, stays in the
file and the page cache, and touching the rows again maps them back (a minor fault, no disk
read while the page cache holds them). :func:`blocks` reads a matrix block by block and
releases each block after use, so a full pass holds one block.

:func:`write_rows` writes rows into a memory-mapped matrix through its file (``pwrite``)
rather than through the mapping: writing a page through a mapping costs a page fault, and a
million 384-d vectors written 1024 rows at a time took 4.5 s in row order (10-14 s in a random
order) against 0.6-1.2 s with ``pwrite``, which also leaves nothing resident in the process.
Linux's page cache is shared between the two, so reads through the mapping see the rows.

Arrays not backed by a memory map (in memory, or a fake in a test) are read the same way;
releasing them does nothing.

:func:`reset_peak_rss` and :func:`peak_rss_bytes` measure one stage's peak resident set (Linux's
``VmHWM``, reset through ``/proc/self/clear_refs``): the manifest records it per stage.

:func:`trim_heap` returns the C heap's free pages to the OS (glibc ``malloc_trim``), which
glibc otherwise keeps for the process's next allocations: a stage's freed temporaries would
still count towards the next stage's peak.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import mmap
import os
from collections.abc import Iterator

import numpy as np


def _mapping(X: np.ndarray) -> mmap.mmap | None:
    """The mmap behind ``X`` (an ``np.memmap`` or a view of one), if any."""
    a = X
    while a is not None:
        mm = getattr(a, "_mmap", None)
        if isinstance(mm, mmap.mmap):
            return mm
        if isinstance(a, mmap.mmap):
            return a
        a = getattr(a, "base", None)
    return None


def release(X: np.ndarray, start: int = 0, stop: int | None = None) -> None:
    """Unmap rows ``start:stop`` of a memory-mapped ``X`` from this process (see the module
    docstring); the values are unchanged. A no-op for arrays not backed by a memory map."""
    mm = _mapping(X)
    if mm is None or X.size == 0 or not X.flags.c_contiguous:
        return
    stop = len(X) if stop is None else min(stop, len(X))
    if stop <= start:
        return
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data  # where the mapping starts
    row = X.strides[0]
    first = X.ctypes.data - base + start * row
    aligned = first - first % mmap.PAGESIZE  # madvise takes a page-aligned start
    # pages shared with rows outside the range are unmapped too: harmless, they map back on use
    mm.madvise(mmap.MADV_DONTNEED, aligned, first - aligned + (stop - start) * row)


def blocks(X: np.ndarray, block: int = 65_536, step: int = 1) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, X[rows])`` for consecutive blocks of at most ``block`` rows. A block is a view;
    its pages are released when the next block is asked for (reading the view later still
    works: the pages map back). With ``step`` > 1 only every ``step``-th row is taken
    (``rows`` has that step): still at most ``block`` rows a block, but as a copy gathered by
    :func:`take`, so at most ``block`` consecutive rows of ``X`` are resident at once, not the
    ``block * step`` rows the block spans (a view of them left most of the stretch mapped: the
    fault-around maps the pages beside each row read: 2M x 384 vectors sampled 1 in 16, the
    2-D map's peak 0.49 -> 0.31 GB)."""
    span = block * step
    for s in range(0, len(X), span):
        rows = slice(s, min(s + span, len(X)), step)
        if step == 1:
            yield rows, X[rows]
            release(X, rows.start, rows.stop)
        else:
            yield rows, take(X, np.arange(rows.start, rows.stop, step), block)


def take(X: np.ndarray, idx: np.ndarray, block: int = 65_536) -> np.ndarray:
    """``X[idx]`` (a copy, rows in ``idx``'s order), gathered one stretch of ``block`` rows of
    ``X`` at a time in ascending order, each stretch released after it is read.

    A random gather from a memory map is the worst case for the resident set: each row read
    maps the pages around it too (the kernel's fault-around, 64 KiB), so a 2% sample of a pool
    can leave most of the matrix resident; here at most one stretch is.
    """
    idx = np.asarray(idx, dtype=np.int64)
    out = np.empty((len(idx), *X.shape[1:]), dtype=X.dtype)
    order = np.argsort(idx, kind="stable")
    rows = idx[order]
    cuts = np.searchsorted(rows, np.arange(0, len(X) + block, block))
    for w, (a, b) in enumerate(zip(cuts[:-1], cuts[1:])):
        if b > a:
            out[order[a:b]] = X[rows[a:b]]
            release(X, w * block, (w + 1) * block)
    return out


def write_rows(X: np.ndarray, positions: np.ndarray, rows: np.ndarray) -> None:
    """``X[positions] = rows`` for distinct ``positions``. A memory-mapped, C-contiguous ``X``
    is written through its file, one ``pwrite`` per run of consecutive positions (see the
    module docstring); any other array by plain assignment."""
    positions = np.asarray(positions, dtype=np.int64)
    if not len(positions):
        return
    mm = _mapping(X)
    name = getattr(X, "filename", None)
    if mm is None or name is None or not X.flags.c_contiguous or not X.flags.writeable:
        X[positions] = rows
        return
    order = np.argsort(positions, kind="stable")
    pos = positions[order]
    data = np.ascontiguousarray(np.asarray(rows)[order], dtype=X.dtype)
    # where X[0] is in the file: the mapping starts at the offset rounded down to the allocation
    # granularity (as np.memmap maps it), and X may be a view into the mapping
    base = np.frombuffer(mm, dtype=np.uint8).ctypes.data
    first = X.offset - X.offset % mmap.ALLOCATIONGRANULARITY + (X.ctypes.data - base)
    row = X.strides[0]
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(pos) != 1) + 1, [len(pos)]])
    fd = os.open(name, os.O_WRONLY)
    try:
        for a, b in zip(cuts[:-1], cuts[1:]):
            view = memoryview(data[a:b]).cast("B")
            at, done = first + int(pos[a]) * row, 0
            while done < len(view):  # a regular file takes it all at once, but pwrite may not
                done += os.pwrite(fd, view[done:], at + done)
    finally:
        os.close(fd)


def reset_peak_rss() -> bool:
    """Start measuring a new peak: set this process's resident-set high-water mark (Linux's
    ``VmHWM``) to its current resident set, through ``/proc/self/clear_refs``. False where the
    kernel offers no such reset (not Linux, or /proc not writable): then there is no peak to read."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int | None:
    """This process's resident-set high-water mark (``VmHWM``) in bytes: the largest resident set
    since the process started or since :func:`reset_peak_rss`. None where /proc has no such line."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # reported in kB
    except OSError:
        pass
    return None


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to call
        return None


def trim_heap() -> None:
    """Hand the C heap's free memory back to the OS (glibc only; elsewhere a no-op), as Dask's
    workers do: about 0.1 GB after a million-row stage (bench/scale.py)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
