"""Embedding-cache lookup: the indexed cache against the previous read-every-part cache.

    .venv/bin/python bench/cache.py [--sizes 10000,100000,1000000,10000000] [--query 10000]
                                    [--dim 384] [--part-rows 1024] [--old-max 1000000]

For each cache size N the script fills two caches with the same N vectors (``--dim`` float32,
MiniLM's 384 by default) in parts of ``--part-rows`` keys, as ``pipeline.embed_texts`` does with
its default chunk size:

* **new**: ``curation.embed.EmbeddingCache`` (``.npy`` parts plus a SQLite index), filled through
  ``put``, one call per part;
* **old**: the previous format (one zstd Parquet file per part, columns ``key`` and ``vector``),
  looked up with a copy of the previous ``get`` (``old_get`` below, labelled as such): it reads
  every part file. Only for N <= ``--old-max``.

Then the same lookup of ``--query`` keys (all present, so the result is a full matrix: the build's
all-cached case) runs against each, each run in a fresh child process, which reports wall time,
the returned vectors checked bit for bit, and its peak RSS growth over the lookup (the kernel's
peak-RSS counter, reset just before the lookup, minus the RSS then; for the new cache this
includes SQLite's page cache, at most 64 MiB). Each lookup is run twice and the faster run is
reported (the files were just written, so both read from the page cache). The open (constructor)
time of the new cache and, for N <= ``--old-max``, the one-off migration of the old cache into the
new layout are timed too. The machine's load average is recorded per row.

Keys are sha256 hex digests like ``content_key``'s; vector i is a fixed random row plus i mod
1000, so a child can check what it got. Results: ``bench/results/cache.md``. Disk: about
``N * (dim * 4 + 64)`` bytes per cache, twice for sizes with the old format; the work directory is
removed size by size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.embed import EmbeddingCache  # noqa: E402
from curation.memory import peak_rss_bytes, reset_peak_rss  # noqa: E402  (the build's own per-stage peaks)

EMBEDDER = "bench-cache"
BASE_ROWS = 4096


# ------------------------------------------------------------------ the previous implementation
# A copy of the cache as it was before the SQLite index (curation/embed/cache.py, git history),
# kept here only to measure against: `old_put` writes a part the old way, `old_get` is the old
# lookup, which reads every part file of the directory.
def old_put(directory: Path, keys: list[str], vectors: np.ndarray) -> None:
    flat = pa.array(vectors.reshape(-1))
    table = pa.table({"key": pa.array(list(keys), pa.string()),
                      "vector": pa.FixedSizeListArray.from_arrays(flat, vectors.shape[1])})
    digest = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:24]
    tmp = directory / f".tmp-{digest}.parquet"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, directory / f"part-{digest}.parquet")


def old_get(directory: Path, keys) -> tuple[np.ndarray, np.ndarray | None]:
    keys = np.asarray(keys, dtype=object)
    found = np.zeros(len(keys), dtype=bool)
    parts = sorted(directory.glob("part-*.parquet")) if directory.is_dir() else []
    if not parts or not len(keys):
        return found, None
    uniq, inverse = np.unique(keys.astype(str), return_inverse=True)
    pos = {k: i for i, k in enumerate(uniq)}
    vectors: np.ndarray | None = None
    have = np.zeros(len(uniq), dtype=bool)
    for part in parts:
        table = pq.read_table(part)
        rows = [(j, pos[k]) for j, k in enumerate(table.column("key").to_pylist()) if k in pos]
        if not rows:
            continue
        vec = table.column("vector").combine_chunks()
        flat = vec.values.to_numpy(zero_copy_only=False).reshape(-1, vec.type.list_size)
        if vectors is None:
            vectors = np.zeros((len(uniq), flat.shape[1]), dtype=np.float32)
        src, dst = np.array(rows).T
        vectors[dst] = flat[src]
        have[dst] = True
    if vectors is None:
        return found, None
    found = have[inverse]
    return found, np.ascontiguousarray(vectors[inverse[found]])
# ----------------------------------------------------------------------------------------------


def keys_for(idx: np.ndarray) -> list[str]:
    return [hashlib.sha256(str(int(i)).encode()).hexdigest() for i in idx]


def vectors_for(idx: np.ndarray, dim: int) -> np.ndarray:
    base = np.random.default_rng(12345).standard_normal((BASE_ROWS, dim)).astype(np.float32)
    return base[idx % BASE_ROWS] + (idx % 1000).astype(np.float32)[:, None]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")



def child(impl: str, root: str, n_cache: int, n_query: int, dim: int, seed: int) -> None:
    """One lookup in this (fresh) process; prints a JSON line."""
    q = np.random.default_rng(seed).choice(n_cache, n_query, replace=False)
    keys = keys_for(q)
    open_s = 0.0
    if impl == "new":
        t0 = time.perf_counter()
        cache = EmbeddingCache(root, EMBEDDER)
        open_s = time.perf_counter() - t0
        lookup = cache.get
    else:
        directory = Path(root) / hashlib.sha256(EMBEDDER.encode()).hexdigest()[:24]

        def lookup(k):
            return old_get(directory, k)
    reset_peak_rss()
    before = rss_bytes()
    t0 = time.perf_counter()
    found, got = lookup(keys)
    seconds = time.perf_counter() - t0
    peak = peak_rss_bytes()
    expected = vectors_for(q, dim)
    ok = bool(found.all()) and got is not None and np.array_equal(got.view(np.uint32), expected.view(np.uint32))
    print(json.dumps({"seconds": seconds, "open_s": open_s, "ok": ok, "rss_growth": max(peak - before, 0),
                      "result_bytes": int(got.nbytes) if got is not None else 0, "load": os.getloadavg()[0]}))


def run_child(impl: str, root: Path, n_cache: int, args: argparse.Namespace, repeats: int = 2) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, __file__, "--child", impl, str(root), str(n_cache), str(args.query),
                              str(args.dim), str(args.seed)], check=True, capture_output=True, text=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    best = min(runs, key=lambda r: r["seconds"])
    best["ok"] = all(r["ok"] for r in runs)
    return best


def dir_bytes(path: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern))


def build(n_cache: int, args: argparse.Namespace, work: Path, old: bool) -> dict:
    new_root, old_root = work / "new", work / "old"
    old_dir = old_root / hashlib.sha256(EMBEDDER.encode()).hexdigest()[:24]
    if old:
        old_dir.mkdir(parents=True)
    cache = EmbeddingCache(new_root, EMBEDDER)
    put_s = old_s = 0.0
    for start in range(0, n_cache, args.part_rows):
        idx = np.arange(start, min(start + args.part_rows, n_cache))
        keys, vecs = keys_for(idx), vectors_for(idx, args.dim)
        t0 = time.perf_counter()
        cache.put(keys, vecs)
        put_s += time.perf_counter() - t0
        if old:
            t0 = time.perf_counter()
            old_put(old_dir, keys, vecs)
            old_s += time.perf_counter() - t0
        if start // args.part_rows % 1000 == 999:
            print(f"  filled {start + len(idx):,}/{n_cache:,}", flush=True)
    return {"put_s": put_s, "old_put_s": old_s, "parts": -(-n_cache // args.part_rows),
            "index_bytes": dir_bytes(new_root, "index.sqlite3*"), "new_bytes": dir_bytes(new_root, "part-*.npy"),
            "old_bytes": dir_bytes(old_root, "part-*.parquet") if old else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000,10000000")
    ap.add_argument("--query", type=int, default=10_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--part-rows", type=int, default=1024)
    ap.add_argument("--old-max", type=int, default=1_000_000, help="largest N also built in the old format")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", default=None, help="where the caches are built (default: a temporary directory)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "cache.md"))
    ap.add_argument("--child", nargs=6, metavar=("IMPL", "ROOT", "N", "QUERY", "DIM", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        impl, root, n, nq, dim, seed = args.child
        child(impl, root, int(n), int(nq), int(dim), int(seed))
        return 0

    sizes = [int(s) for s in args.sizes.split(",")]
    load_start = os.getloadavg()
    base = Path(args.workdir or tempfile.mkdtemp(prefix="bench-cache-"))
    rows = []
    failed = False
    t_all = time.perf_counter()
    head = (f"{'N':>11} {'parts':>6} {'old s':>8} {'new s':>7} {'ratio':>8} {'old +RSS':>9} {'new +RSS':>9} "
            f"{'open s':>7} {'put k/s':>8} {'migrate s':>9} {'load':>5}")
    print(head, flush=True)
    for n_cache in sizes:
        work = base / str(n_cache)
        shutil.rmtree(work, ignore_errors=True)
        old = n_cache <= args.old_max
        print(f"N={n_cache:,}: filling the cache{'s' if old else ''}", flush=True)
        facts = build(n_cache, args, work, old)
        new = run_child("new", work / "new", n_cache, args)
        row = {"n": n_cache, **facts, "new": new, "old": None, "migrate_s": None}
        if old:
            row["old"] = run_child("old", work / "old", n_cache, args)
            t0 = time.perf_counter()
            EmbeddingCache(work / "old", EMBEDDER)  # migrates the Parquet parts in place
            row["migrate_s"] = time.perf_counter() - t0
            migrated = run_child("new", work / "old", n_cache, args, repeats=1)
            failed |= not migrated["ok"]
        failed |= not new["ok"] or (row["old"] is not None and not row["old"]["ok"])
        rows.append(row)
        shutil.rmtree(work, ignore_errors=True)
        o = row["old"]
        print(f"{n_cache:>11,} {facts['parts']:>6,} {o['seconds'] if o else float('nan'):>8.3f} {new['seconds']:>7.3f} "
              f"{(o['seconds'] / new['seconds']) if o else float('nan'):>7.1f}x "
              f"{(o['rss_growth'] / 2**20) if o else float('nan'):>8.0f}M {new['rss_growth'] / 2**20:>8.0f}M "
              f"{new['open_s']:>7.3f} {n_cache / facts['put_s'] / 1e3:>8.1f} "
              f"{row['migrate_s'] if row['migrate_s'] is not None else float('nan'):>9.1f} {new['load']:>5.2f}",
              flush=True)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)
    total_s = time.perf_counter() - t_all
    load_end = os.getloadavg()
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def fmt(x, spec, suffix=""):
        return "–" if x is None else f"{x:{spec}}{suffix}"

    table = ["| cache N | parts | old lookup s | new lookup s | speed-up | old peak RSS growth | "
             "new peak RSS growth | result | new open s | load (1 min) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        o, nw = r["old"], r["new"]
        table.append(
            f"| {r['n']:,} | {r['parts']:,} | {fmt(o and o['seconds'], '.3f')} | {nw['seconds']:.3f} | "
            f"{fmt(o and o['seconds'] / nw['seconds'], '.1f', 'x')} | "
            f"{fmt(o and o['rss_growth'] / 2**20, '.0f', ' MiB')} | {nw['rss_growth'] / 2**20:.0f} MiB | "
            f"{nw['result_bytes'] / 2**20:.1f} MiB | {nw['open_s']:.3f} | {nw['load']:.2f} |")
    table2 = ["| cache N | new: put s (keys/s) | new: parts + index on disk | old: write s | old: parts on disk | "
              "migrating old to new s |", "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        old_w = f"{r['old_put_s']:.1f}" if r["old"] else "–"
        old_b = f"{r['old_bytes'] / 2**30:.2f} GiB" if r["old"] else "–"
        table2.append(
            f"| {r['n']:,} | {r['put_s']:.1f} ({r['n'] / r['put_s']:,.0f}) | {r['new_bytes'] / 2**30:.2f} GiB + "
            f"{r['index_bytes'] / 2**20:.0f} MiB | {old_w} | {old_b} | {fmt(r['migrate_s'], '.1f')} |")
    import sqlite3

    cmd = "bench/cache.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    md = [
        "# Embedding cache: lookup cost against cache size",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `.venv/bin/python {cmd.strip()}` (`make bench-cache`); total {total_s / 60:.1f} min",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"python {platform.python_version()}, numpy {np.__version__}, SQLite {sqlite3.sqlite_version}",
        f"- load average (1/5/15 min): {' / '.join(f'{x:.2f}' for x in load_start)} at the start, "
        f"{' / '.join(f'{x:.2f}' for x in load_end)} at the end; the driver's own peak RSS {self_peak:.0f} MiB",
        f"- lookup: {args.query:,} keys, all present (seed {args.seed}), each cache holding N vectors of "
        f"{args.dim} float32 in parts of {args.part_rows:,} keys (one `put` per part, as `embed_texts` "
        f"writes with its default chunk size); keys are sha256 hex digests",
        "- each lookup runs in a fresh process, twice; the faster run is shown. Both returned the stored "
        f"vectors bit for bit: **{'no' if failed else 'yes'}**",
        "",
        *table,
        "",
        *table2,
        "",
        "**old** is the previous cache (one Parquet file per part; `get` reads every part file), run from a copy "
        "of its code kept in `bench/cache.py`; **new** is `curation.embed.EmbeddingCache` (`.npy` parts plus a "
        "SQLite index). Peak RSS growth is the lookup process's peak RSS (VmHWM, reset just before the "
        "lookup) minus its RSS just before the lookup; for the new cache it is the result, the hits' stored "
        "keys and SQLite's page cache of index pages (at most 64 MiB per connection). *new open s* is the constructor: it removes "
        "dead writers' temporary files and checks the index against the part files (one directory listing). "
        "*migrating* is the one-off first open of the old-format cache, which converts every Parquet part "
        "(then the lookup on the migrated cache was checked too). Sizes above the old format's maximum were "
        "built in the new format only.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
