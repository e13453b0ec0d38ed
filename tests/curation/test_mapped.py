"""curation.mapped: a pass over a memory-mapped matrix leaves it mapped but not resident."""

from __future__ import annotations

import numpy as np

from curation.mapped import blocks, release
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
