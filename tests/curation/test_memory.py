"""curation.memory: a pass over a memory-mapped matrix leaves it mapped but not resident."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from curation.memory import blocks, release, write_rows
from curation.metrics import projection_2d


def resident_kb(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (from /proc/self/smaps)."""
    total, inside = 0, False
    for line in open("/proc/self/smaps"):
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
            inside = len(fields) >= 6 and fields[5] == str(path)
        elif inside and fields[0] == "Rss:":
            total += int(fields[1])
    return total


def test_release_unmaps_the_rows_pages_and_keeps_their_values(tmp_path):
    path = tmp_path / "x.npy"
    X = np.lib.format.open_memmap(path, "w+", np.float32, (20_000, 384))  # 29 MiB
    X[:] = np.arange(20_000, dtype=np.float32)[:, None]
    assert resident_kb(path) > 25_000  # written through the mapping: resident
    release(X)
    assert resident_kb(path) < 100
    R = np.load(path, mmap_mode="r")
    assert float(R[:, 0].sum(dtype=np.float64)) == float(np.arange(20_000).sum())  # the writes reached the file
    release(R, 0, 10_000)
    assert 10_000 < resident_kb(path) < 16_000  # only the second half stays resident
    assert float(R[123, 7]) == 123.0  # released rows read back
    release(np.ones((4, 3)))  # not memory-mapped: nothing to do


def test_a_blocked_pass_holds_about_one_block_and_sees_every_row(tmp_path):
    path = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.normal(size=(30_000, 256)).astype(np.float32))  # 29 MiB
    X = np.load(path, mmap_mode="r")
    peak, seen = 0, []
    for _, Xb in blocks(X, 2_000):
        seen.append(float(Xb.sum(dtype=np.float64)))
        peak = max(peak, resident_kb(path))
    assert peak < 6_000  # one 2,000-row block is 2 MiB; the whole matrix 29 MiB
    assert np.isclose(sum(seen), float(np.asarray(X).sum(dtype=np.float64)))
    release(X)
    np.testing.assert_array_equal(projection_2d(X, block=2_000), projection_2d(np.load(path), block=2_000))
    assert resident_kb(path) < 6_000  # the map of the memory-mapped pool did not keep it resident
    # axes fitted on every 6th row: the same bits from the file as from memory, nothing left resident
    np.testing.assert_array_equal(projection_2d(X, block=2_000, fit_rows=5_000),
                                  projection_2d(np.load(path), block=2_000, fit_rows=5_000))
    assert resident_kb(path) < 6_000


def test_a_sampled_pass_and_the_selection_metrics_hold_about_one_block_of_a_memory_map(tmp_path):
    from curation.metrics import selection_metrics

    path = tmp_path / "x.npy"
    rng = np.random.default_rng(0)
    np.save(path, rng.normal(size=(40_000, 256)).astype(np.float32))  # 39 MiB
    X = np.load(path, mmap_mode="r")
    peak, rows = 0, []
    for r, Xb in blocks(X, 1_000, step=7):  # every 7th row: 7,000 rows spanned a block
        rows.append(np.arange(r.start, r.stop, r.step))
        assert np.array_equal(Xb, np.load(path)[r])
        peak = max(peak, resident_kb(path))
    assert np.array_equal(np.concatenate(rows), np.arange(0, 40_000, 7))
    assert peak < 3_000  # a 1,000-row stretch is 1 MiB; the 7,000 rows a block spans 6.8 MiB
    chosen = np.zeros(40_000, bool)
    chosen[rng.choice(40_000, 400, replace=False)] = True  # 400 rows and 400 random ones, spread out
    assert selection_metrics(X, chosen, np.random.default_rng(1)) == selection_metrics(
        np.load(path), chosen, np.random.default_rng(1))
    assert resident_kb(path) < 3_000  # a plain gather left the pages around every row: all 39 MiB


TRIM_CHILD = """
from curation.memory import trim_heap

def rss_anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024

junk, keep = [], []
for _ in range(2000):  # 100 kB blocks (below glibc's mmap threshold) pinned apart by 1 kB ones
    block = bytearray(100_000)
    block[::4096] = b"\\x01" * len(range(0, 100_000, 4096))  # resident, whatever calloc did
    junk.append(block)
    keep.append(bytearray(1000))
del junk
before = rss_anon_mb()
trim_heap()
print(before - rss_anon_mb(), len(keep))
"""


def test_trim_heap_hands_freed_heap_between_live_blocks_back_to_the_os():
    """glibc keeps freed chunks that sit below live ones; trim_heap returns their pages. In a
    fresh interpreter: in this one, earlier tests' allocations and trims decide where the blocks
    land (a full run once saw 69 MB handed back)."""
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", TRIM_CHILD], cwd=root, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(root)})
    freed, kept = out.stdout.split()
    assert float(freed) > 100 and int(kept) == 2000  # of the ~190 MB freed


def test_take_gathers_rows_in_the_callers_order_holding_one_stretch_at_a_time(tmp_path, monkeypatch):
    from curation import memory

    path = tmp_path / "x.npy"
    np.save(path, np.arange(80_000 * 128, dtype=np.float32).reshape(80_000, 128))  # 39 MiB
    X = np.load(path, mmap_mode="r")
    idx = np.random.default_rng(1).choice(80_000, size=6_000, replace=False)  # a random sample
    idx = np.concatenate([idx, idx[:5]])  # repeats too
    resident_before_each_release = []
    real_release = memory.release

    def watched(A, start=0, stop=None):
        resident_before_each_release.append(resident_kb(path))
        real_release(A, start, stop)

    monkeypatch.setattr(memory, "release", watched)
    got = memory.take(X, idx, block=8_000)
    np.testing.assert_array_equal(got, np.asarray(X)[idx])
    assert len(resident_before_each_release) == 10  # one stretch of 8,000 rows (3.9 MiB) at a time
    real_release(X)
    X[np.sort(idx)]  # the same rows gathered plainly: the kernel's read-around maps nearly all of X
    plain = resident_kb(path)
    assert plain > 30_000  # of 39 MiB
    # one stretch plus what the kernel maps around the faults (up to a few MiB here)
    assert max(resident_before_each_release) < plain / 3


def test_write_rows_through_the_file_equals_assignment_and_leaves_nothing_resident(tmp_path):
    rng = np.random.default_rng(1)
    rows = rng.normal(size=(5_000, 384))  # float64: cast to the matrix's float32, as assignment does
    positions = rng.permutation(20_000)[:5_000]
    positions[:1_000] = np.arange(7_000, 8_000)  # one long run and many single rows
    positions = np.unique(positions)[rng.permutation(len(np.unique(positions)))]
    expected = np.zeros((20_000, 384), np.float32)
    expected[positions] = rows[: len(positions)]
    path = tmp_path / "x.npy"
    X = np.lib.format.open_memmap(path, "w+", np.float32, (20_000, 384))
    write_rows(X, positions, rows[: len(positions)])
    assert resident_kb(path) < 100  # nothing went through the mapping
    np.testing.assert_array_equal(np.asarray(X), expected)  # and the mapping sees every row
    np.testing.assert_array_equal(np.load(path), expected)
    view = X[10_000:]  # a view: positions count from its first row
    write_rows(view, np.array([0, 5]), np.full((2, 384), 7.0))
    assert (np.load(path)[[10_000, 10_005]] == 7.0).all() and (np.load(path)[10_001] == expected[10_001]).all()
    plain = np.zeros((20_000, 384), np.float32)
    write_rows(plain, positions, rows[: len(positions)])  # not memory-mapped: plain assignment
    np.testing.assert_array_equal(plain, expected)


def test_importing_curation_first_sets_the_allocators_decay_unless_the_user_did():
    """polars' jemalloc returns freed pages after a second (at once, every reuse was a page
    fault: half of a 1M-row ingest's CPU), pyarrow uses the system allocator; a user's own
    setting is kept (polars appends it after its defaults, so it wins)."""
    code = "import os, curation, polars; print(os.environ['_RJEM_MALLOC_CONF']); print(os.environ['ARROW_DEFAULT_MEMORY_POOL'])"
    env = {k: v for k, v in os.environ.items() if k not in ("_RJEM_MALLOC_CONF", "ARROW_DEFAULT_MEMORY_POOL")}
    conf, pool = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                check=True).stdout.split()
    assert conf.endswith("dirty_decay_ms:1000,muzzy_decay_ms:0") and pool == "system"
    mine = subprocess.run([sys.executable, "-c", code], env={**env, "_RJEM_MALLOC_CONF": "dirty_decay_ms:7"},
                          capture_output=True, text=True, check=True).stdout.split()[0]
    assert mine.endswith("dirty_decay_ms:7") and "dirty_decay_ms:1000" not in mine
