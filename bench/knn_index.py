"""Would an approximate (IVF) index speed up truncated KNN-Shapley's neighbour search?

    .venv/bin/python bench/knn_index.py [--rows 262144] [--validation 10000] [--models hashing static-minilm]
                                        [--nlist 1024] [--nprobe 16 64 256]

Truncated KNN-Shapley (ε = 0.01, K* = 100) searches the pool in shards of
``curation.value.knn_shapley.SHARD_ROWS`` rows with an exact faiss ``IndexFlatL2``. This script
takes one shard of the scale benchmark's pool (``bench/scale.py``'s synthetic short texts,
normalised vectors of each embedder) and ``--validation`` held-out texts, and measures in one
run:

* **flat**: the exact search, as the value stage does it;
* **ivf**: faiss ``IndexIVFFlat`` with ``--nlist`` lists, trained on 40 points per list (faiss's
  minimum recommended sample, seed 1), at each ``--nprobe``: training + adding + searching time,
  its ratio to flat, recall@K* (the share of the exact K* nearest it returns) and the largest
  difference of the truncated values from the exact search's, also over the largest absolute
  value (the exact search's values are within ε of the true values; this error comes on top).

The machine's load average is recorded. Result: ``bench/results/knn_index.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from scale import make_pool  # noqa: E402

from curation.embed import make_text_embedder  # noqa: E402
from curation.value.knn_shapley import SHARD_ROWS, truncated_values, truncation_rank  # noqa: E402

K, EPSILON = 5, 0.01


def vectors(model: str, texts: list[str]) -> np.ndarray:
    emb = make_text_embedder(model, normalize=True, max_seq_length=32)
    return np.ascontiguousarray(np.concatenate([emb.embed(texts[i : i + 8192]) for i in range(0, len(texts), 8192)]),
                                dtype=np.float32)


def main() -> None:
    import faiss

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=SHARD_ROWS)
    ap.add_argument("--validation", type=int, default=10_000)
    ap.add_argument("--models", nargs="+", default=["hashing", "static-minilm"])
    ap.add_argument("--nlist", type=int, default=1024)
    ap.add_argument("--nprobe", type=int, nargs="+", default=[16, 64, 256])
    ap.add_argument("--out", default=str(ROOT / "bench/results/knn_index.md"))
    args = ap.parse_args()
    n, T = args.rows, args.validation
    kstar = truncation_rank(n, K, EPSILON)
    with tempfile.TemporaryDirectory() as tmp:
        make_pool(n + T, Path(tmp) / "pool.parquet")
        pool = pl.read_parquet(Path(tmp) / "pool.parquet")
    texts = pool["text"].to_list()
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, n + T)  # labels: the values depend on which neighbours are found
    load_start = os.getloadavg()
    rows = []
    for model in args.models:
        X = vectors(model, texts)
        Xtr, Xte, d = X[:n], X[n:], X.shape[1]
        t0 = time.perf_counter()
        flat = faiss.IndexFlatL2(d)
        flat.add(Xtr)
        _, exact = flat.search(Xte, kstar)
        flat_s = time.perf_counter() - t0
        exact_values = truncated_values(exact, y[:n], y[n:], K, n)
        print(f"{model}: flat {flat_s:.2f} s", flush=True)
        top = float(np.abs(exact_values).max())
        rows.append({"embedder": model, "dim": d, "index": "flat (exact)", "nprobe": "", "build_s": 0.0,
                     "search_s": round(flat_s, 2), "ratio": 1.0, "recall": 1.0, "max_value_diff": "0",
                     "max_value_diff / max_abs_value": "0", "load": round(os.getloadavg()[0], 2)})
        t0 = time.perf_counter()
        ivf = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, args.nlist)
        ivf.cp.seed = 1
        ivf.train(Xtr[np.sort(rng.choice(n, min(n, 40 * args.nlist), replace=False))])
        ivf.add(Xtr)
        build_s = time.perf_counter() - t0
        for nprobe in args.nprobe:
            ivf.nprobe = nprobe
            t0 = time.perf_counter()
            _, approx = ivf.search(Xte, kstar)
            search_s = time.perf_counter() - t0
            recall = float(np.mean([len(np.intersect1d(a, b)) for a, b in zip(exact, approx)]) / kstar)
            approx = np.where(approx < 0, 0, approx)  # unfilled slots (too few rows probed): any row
            diff = float(np.abs(truncated_values(approx, y[:n], y[n:], K, n) - exact_values).max())
            ratio = (build_s + search_s) / flat_s
            print(f"  ivf nlist {args.nlist} nprobe {nprobe}: {build_s:.2f} + {search_s:.2f} s ({ratio:.2f}x flat), "
                  f"recall@{kstar} {recall:.3f}, max value diff {diff:.2e}", flush=True)
            rows.append({"embedder": model, "dim": d, "index": f"IVF{args.nlist},Flat", "nprobe": nprobe,
                         "build_s": round(build_s, 2), "search_s": round(search_s, 2), "ratio": round(ratio, 2),
                         "recall": round(recall, 3), "max_value_diff": f"{diff:.1e}",
                         "max_value_diff / max_abs_value": f"{diff / top:.2f}", "load": round(os.getloadavg()[0], 2)})
    load_end = os.getloadavg()
    cols = list(rows[0])
    lines = [
        "# KNN-Shapley's neighbour search: exact shards against an IVF index",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, {platform.machine()}, {os.cpu_count()} cores; "
        f"`python bench/knn_index.py{''.join(' ' + a for a in sys.argv[1:]) or ' (defaults)'}`. One shard of {n:,} pool rows (bench/scale.py's "
        f"synthetic short texts) against {T:,} held-out rows, K = {K}, ε = {EPSILON} (K* = {kstar}); random binary "
        f"labels. Load average {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end.",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
        *("| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows),
        "",
        "ratio: (build_s + search_s) of the IVF index over the exact search's time. recall: the share of each "
        "held-out row's exact K* nearest that the IVF search returns. max_value_diff: the largest difference of a "
        "truncated value computed from the IVF neighbours from the one computed from the exact neighbours, and "
        "that difference over the largest absolute value of the exact search's values.",
    ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
