"""kMQ benchmark: does diversity-aware selection train a better classifier than random?

    .venv/bin/python bench/kmq.py [--tasks 60] [--fraction 0.1] [--k 64] [--seeds 5]

Real labelled text: the OpenAI evals prompts (`make data`), label = the task a prompt comes
from, restricted to the ``--tasks`` largest tasks. Each prompt is embedded with the packaged
MiniLM (max 128 tokens; vectors come from the embedding cache that `make demo` fills, so a
rerun embeds nothing). 20% of the prompts (stratified by task) are held out for testing; the
rest is the pool. Every method selects ``--fraction`` of the pool; the same downstream
classifier (a ridge classifier on the embeddings: linear, closed form, deterministic) is trained
on each selection and scored on the held-out set. Methods:

* random; stratified (equal quotas per language group: what a careful human would do without
  embeddings); kM-Random (kmq, constant quality); kMQ with quality = normalised length and with
  quality = knn-agreement of labels (T = 0.2); iterative kMQ (3 rounds, proxy-loss feedback,
  knn-agreement quality); and the composed selection (``chain``): per-language quotas (the pool's
  mix, at least 20 per language) each filled by iterative kMQ inside the language;

Reported per method: held-out accuracy, worst-class and worst-language accuracy (mean ± std over seeds), the
Vendi score (q = 1, cosine) of the selection, and wall time. Results: bench/results/kmq.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from curation.cluster import FaissKMeans, silhouette  # noqa: E402
from curation.embed import EmbeddingCache, SentenceTransformerEmbedder  # noqa: E402
from curation.metrics import vendi_score  # noqa: E402
from curation.pipeline import embed_texts, serial_map  # noqa: E402
from curation.select import build_selector  # noqa: E402
from curation.types import Pool  # noqa: E402

METHODS = {
    "random": ("random", {}),
    "stratified (lang, equal)": ("stratified", {"mode": "equal"}),
    "kM-Random": ("kmq", {}),
    "kMQ (length)": ("kmq", {"quality": "length", "temperature": 0.2}),
    "kMQ (knn-agreement)": ("kmq", {"quality": {"name": "knn-agreement", "k": 10}, "temperature": 0.2}),
    "kMQ-iterative (3 rounds)": ("kmq-iterative", {"rounds": 3, "quality": {"name": "knn-agreement", "k": 10},
                                                   "temperature": 0.2, "feedback": {"name": "proxy-loss", "folds": 3}}),
    # composed: the pool's language mix with a floor for every language, kMQ-iterative inside each
    "chain: stratified (lang, proportional, min 20) -> kMQ-iterative": ("chain", {
        "allocate": {"method": "stratified", "mode": "proportional", "min_per_group": 20},
        "within": {"method": "kmq-iterative", "rounds": 3, "quality": {"name": "knn-agreement", "k": 10},
                   "temperature": 0.2, "feedback": {"name": "proxy-loss", "folds": 3}}}),
}


def load(tasks: int, cache_dir: Path) -> tuple[pl.DataFrame, np.ndarray]:
    df = pl.read_parquet(ROOT / "data" / "evals_prompts.parquet").unique("text", keep="first", maintain_order=True)
    top = df.group_by("task").len().sort(["len", "task"], descending=[True, False]).head(tasks)["task"]
    df = df.filter(pl.col("task").is_in(top.to_list())).sort("prompt_id")
    emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2", max_seq_length=128)
    t0 = time.perf_counter()
    X, counts = embed_texts(df["text"].to_list(), emb, cache=EmbeddingCache(cache_dir, emb.id), map_chunks=serial_map(emb))
    print(f"embeddings: {counts} in {time.perf_counter() - t0:.1f}s", flush=True)
    return df, X


def evaluate(Xtr, ytr, Xte, yte, gte) -> tuple[float, float, float]:
    """Held-out accuracy, worst-class accuracy, and worst-language accuracy (languages with >= 20
    test rows)."""
    from sklearn.linear_model import RidgeClassifier

    clf = RidgeClassifier(alpha=1.0).fit(Xtr, ytr)
    pred = clf.predict(Xte)
    acc = float((pred == yte).mean())
    per_class = [float((pred[yte == c] == c).mean()) for c in np.unique(yte)]
    per_lang = [float((pred[gte == g] == yte[gte == g]).mean()) for g in np.unique(gte) if (gte == g).sum() >= 20]
    return acc, min(per_class), min(per_lang)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=60)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--cache", default=str(ROOT / "out" / ".cache" / "embeddings"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "kmq.md"))
    args = ap.parse_args()
    load_before = os.getloadavg()  # the machine may be shared: the report says how busy it was

    df, X = load(args.tasks, Path(args.cache))
    y = df["task"].to_numpy().astype(str)
    rng = np.random.default_rng(0)
    test = np.zeros(len(df), bool)
    for t in np.unique(y):  # stratified 20% hold-out
        members = np.flatnonzero(y == t)
        test[rng.choice(members, size=max(1, len(members) // 5), replace=False)] = True
    pool_idx = np.flatnonzero(~test)
    Xp, yp = X[pool_idx], y[pool_idx]
    langs = df["lang"].to_numpy().astype(str)[pool_idx]
    names, codes = np.unique(langs, return_inverse=True)
    km = FaissKMeans(args.k, spherical=True).fit(Xp, rng=np.random.default_rng(0))
    sil = silhouette(Xp, km.labels_, rng=np.random.default_rng(0), metric="cosine")
    pool = Pool(ids=np.arange(len(pool_idx)).astype(str), embeddings=Xp, groups=codes, group_names=tuple(names),
                clusters=km.labels_, labels=yp, texts=df["text"].to_numpy()[pool_idx].astype(object))
    budget = int(round(args.fraction * len(pool)))
    lang_test = df["lang"].to_numpy().astype(str)[test]
    full_acc, full_worst, full_lang = evaluate(Xp, yp, X[test], y[test], lang_test)
    print(f"pool {len(pool)}, test {int(test.sum())}, {len(np.unique(y))} classes, budget {budget}, "
          f"k={args.k} (silhouette {sil:.3f}); full-pool accuracy {full_acc:.4f}", flush=True)

    rows = []
    for label, (method, params) in METHODS.items():
        accs, worsts, langs_, vendis, secs = [], [], [], [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            sel = build_selector(method, **params).select(pool, budget, rng=np.random.default_rng(seed))
            secs.append(time.perf_counter() - t0)
            acc, worst, worst_lang = evaluate(Xp[sel.indices], yp[sel.indices], X[test], y[test], lang_test)
            accs.append(acc)
            worsts.append(worst)
            langs_.append(worst_lang)
            vendis.append(vendi_score(Xp[sel.indices]))
        rows.append({"method": label, "accuracy": f"{np.mean(accs):.4f} ± {np.std(accs):.4f}",
                     "worst-class acc": f"{np.mean(worsts):.4f} ± {np.std(worsts):.4f}",
                     "worst-lang acc": f"{np.mean(langs_):.4f} ± {np.std(langs_):.4f}",
                     "Vendi (q=1)": f"{np.mean(vendis):.2f}", "select s": f"{np.mean(secs):.2f}",
                     "_acc": float(np.mean(accs))})
        print(rows[-1], flush=True)

    order = {r["method"]: r["_acc"] for r in rows}
    chain = ["random", "kM-Random", "kMQ (knn-agreement)", "kMQ-iterative (3 rounds)"]
    holds = all(order[a] <= order[b] + 1e-12 for a, b in zip(chain, chain[1:]))
    table = ["| method | held-out accuracy | worst-class accuracy | worst-language accuracy | Vendi (q=1) | select s |",
             "|---|---:|---:|---:|---:|---:|"]
    table += [f"| {r['method']} | {r['accuracy']} | {r['worst-class acc']} | {r['worst-lang acc']} "
              f"| {r['Vendi (q=1)']} | {r['select s']} |" for r in rows]
    md = [
        "# kMQ benchmark: selection quality on real labelled text",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `.venv/bin/python bench/kmq.py --tasks {args.tasks} --fraction {args.fraction} --k {args.k} "
        f"--seeds {args.seeds}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"{load_before[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end",
        f"- data: OpenAI evals prompts, label = task ({len(np.unique(y))} largest tasks, exact duplicate texts "
        f"dropped), {len(pool)} pool / {int(test.sum())} held out (stratified 20%)",
        f"- embeddings: packaged all-MiniLM-L6-v2, max_seq_length 128, normalised; k-means k={args.k} "
        f"(spherical; sampled silhouette {sil:.3f})",
        f"- budget: {budget} ({args.fraction:.0%} of the pool); classifier: ridge (alpha 1) on the embeddings; "
        f"{args.seeds} seeds",
        f"- the whole pool as training set: accuracy {full_acc:.4f}, worst class {full_worst:.4f}, worst language "
        f"{full_lang:.4f} (languages with >= 20 test rows)",
        "",
        *table,
        "",
        f"Paper ordering random < kM-Random <= kMQ <= iterative (by mean accuracy): "
        f"**{'holds' if holds else 'does not hold'}** here.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
