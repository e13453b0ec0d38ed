"""Quad benchmark: near top-k quality from a fraction of the scorer calls, with more clusters covered?

    .venv/bin/python bench/quad.py [--k 512] [--fraction 0.1] [--seeds 3] [--alphas 0,0.1,1]

Real labelled text: the WordNet 3.0 glosses (`infra/data/fetch_wordnet.py`; 117k synsets),
label = the synset's lexicographer category (45 classes, e.g. ``noun.animal``). Each gloss is
embedded with the packaged MiniLM (max 128 tokens, through the embedding cache, so a rerun
embeds nothing). A stratified 10% is the clean test set, a stratified 2% the clean reference
set for the scorer, the rest (~103k) the pool, clustered with spherical faiss k-means.

Two pools:

* ``clean``: the labels as WordNet has them;
* ``noisy clusters``: a quarter of the clusters (a stand-in for bad sources) get 60% of their
  labels replaced by another class: cluster-level quality varies, as in Quad's setting.

The scorer is ``influence``: g_zᵀ H⁻¹ g_ref through a softmax-regression proxy fitted on 20k
pool rows, against the reference set. Methods at the same budget (``--fraction`` of the pool):

* random; kM-Random (kmq, constant quality: no scorer);
* global top-k by influence (scores every item: N scorer calls);
* kMQ with influence as the quality (scores every item);
* Quad with influence (``--probe`` 5 items scored per pull, ``--chunk`` 20 admitted per accepted
  pull, 50 clusters per round, tau 0: accept chunks whose probes lower the reference loss) for
  each of ``--alphas`` (the UCB exploration weight; the influence scores here are of order 1);
* stratified (equal quotas per part of speech, random inside each);
* two composed selections (``chain``): equal quotas per part of speech, and the pool's shares
  with at least 1000 per part of speech, each quota filled by Quad (influence, alpha 1) on that
  part of speech's rows (the influence proxy is fitted on the whole pool: docs/methods/chain.md).

The groups are the parts of speech (noun, verb, adjective, adverb: the lexicographer category's
prefix), which the pool holds very unequally (70% nouns, 3% adverbs). Quad and kMQ do not look
at groups; the composed rows show what an allocation across groups adds to them.

Reported per method (mean ± std over seeds): held-out accuracy of a ridge classifier trained
on the selection, its worst part-of-speech accuracy (the minimum over the four groups of the
accuracy on that group's test rows), scorer calls (summed over groups for the chain), clusters
covered, classes present in the selection, Vendi score (q = 1, cosine), share of relabelled
items selected, wall time (including the scorer's proxy fit). Results: bench/results/quad.md.
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

from curation.cluster import FaissKMeans  # noqa: E402
from curation.embed import EmbeddingCache, SentenceTransformerEmbedder  # noqa: E402
from curation.metrics import vendi_score  # noqa: E402
from curation.pipeline import embed_texts, serial_map  # noqa: E402
from curation.score import build_scorer  # noqa: E402
from curation.select import build_selector  # noqa: E402
from curation.types import Pool, Reference, Selection  # noqa: E402

DATA = ROOT / "data" / "wordnet_glosses.parquet"


def load(cache_dir: Path) -> tuple[pl.DataFrame, np.ndarray]:
    if not DATA.is_file():
        sys.exit(f"{DATA} is missing: run `.venv/bin/python infra/data/fetch_wordnet.py --install`")
    df = pl.read_parquet(DATA)
    emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2", max_seq_length=128)
    t0 = time.perf_counter()
    X, counts = embed_texts(df["text"].to_list(), emb, cache=EmbeddingCache(cache_dir, emb.id),
                            map_chunks=serial_map(emb))
    print(f"embeddings: {counts} in {time.perf_counter() - t0:.1f}s", flush=True)
    return df, X


def stratified_split(y: np.ndarray, shares: list[float], rng: np.random.Generator) -> list[np.ndarray]:
    """Disjoint index sets holding ``shares`` of every class (at least 1 each); the rest last."""
    parts: list[list[np.ndarray]] = [[] for _ in range(len(shares) + 1)]
    for c in np.unique(y):
        members = rng.permutation(np.flatnonzero(y == c))
        start = 0
        for j, s in enumerate(shares):
            take = max(1, int(round(s * len(members))))
            parts[j].append(members[start : start + take])
            start += take
        parts[-1].append(members[start:])
    return [np.sort(np.concatenate(p)) for p in parts]


def evaluate(Xtr, ytr, Xte, yte, gte) -> tuple[float, float]:
    """Held-out accuracy and worst-group accuracy (the minimum over ``gte``'s groups)."""
    from sklearn.linear_model import RidgeClassifier

    hit = RidgeClassifier(alpha=1.0).fit(Xtr, ytr).predict(Xte) == yte
    return float(hit.mean()), float(min(hit[gte == g].mean() for g in np.unique(gte)))


def scorer_calls(sel: Selection) -> int:
    """Scorer calls of a selection; a chain's are its within-group selections' (one per group)."""
    if "scorer_calls" in sel.info:
        return int(sel.info["scorer_calls"])
    per_group = ((sel.info.get("steps") or {}).get("within") or {}).get("info") or {}
    return int(sum(i.get("scorer_calls", 0) for i in per_group.values()))


def top_k(pool: Pool, budget: int) -> Selection:
    scorer = build_scorer("influence")
    s = scorer.score(pool)
    idx = np.argsort(-s, kind="stable")[:budget]
    return Selection(indices=idx, info={"scorer_calls": scorer.calls})


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=512)
    ap.add_argument("--fraction", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--alphas", default="0,0.3,1,3")
    ap.add_argument("--probe", type=int, default=5)
    ap.add_argument("--chunk", type=int, default=20)
    ap.add_argument("--cache", default=str(ROOT / "out" / ".cache" / "embeddings"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "quad.md"))
    args = ap.parse_args()
    load_before = os.getloadavg()  # the machine may be shared: the report says how busy it was
    alphas = [float(a) for a in args.alphas.split(",")]

    df, X = load(Path(args.cache))
    y = df["lexname"].to_numpy().astype(str)
    pos = np.char.partition(y, ".")[:, 0]  # noun.animal -> noun: the groups
    group_names, pos_code = np.unique(pos, return_inverse=True)
    test, ref, pool_idx = stratified_split(y, [0.10, 0.02], np.random.default_rng(0))
    Xp, y_clean = X[pool_idx], y[pool_idx]
    t0 = time.perf_counter()
    km = FaissKMeans(args.k, spherical=True).fit(Xp, rng=np.random.default_rng(0))
    print(f"pool {len(pool_idx)}, reference {len(ref)}, test {len(test)}, {len(np.unique(y))} classes; "
          f"k-means k={args.k} in {time.perf_counter() - t0:.1f}s", flush=True)
    reference = Reference(ids=np.arange(len(ref)).astype(str), embeddings=X[ref], labels=y[ref])
    budget = int(round(args.fraction * len(pool_idx)))
    classes = np.unique(y)

    rng = np.random.default_rng(1)
    noisy_clusters = rng.permutation(args.k)[: args.k // 4]
    flip = np.isin(km.labels_, noisy_clusters) & (rng.random(len(pool_idx)) < 0.6)
    other = classes[(np.searchsorted(classes, y_clean) + rng.integers(1, len(classes), len(y_clean))) % len(classes)]
    settings = {"clean": y_clean, "noisy clusters": np.where(flip, other, y_clean)}

    methods: dict[str, object] = {
        "random": ("random", {}),
        "kM-Random": ("kmq", {}),
        "top-k (influence)": top_k,
        "kMQ (influence)": ("kmq", {"quality": "influence", "temperature": 0.2}),
        **{f"Quad (influence, alpha {a:g})": ("quad", {"scorer": "influence", "probe": args.probe, "chunk": args.chunk,
                                                        "clusters_per_round": 50, "tau": 0.0, "alpha": a})
           for a in alphas},
        "stratified (POS, equal)": ("stratified", {"mode": "equal"}),
        "chain: stratified (POS, equal) -> Quad (influence, alpha 1)": ("chain", {
            "allocate": {"method": "stratified", "mode": "equal"},
            "within": {"method": "quad", "scorer": "influence", "probe": args.probe, "chunk": args.chunk,
                       "clusters_per_round": 50, "tau": 0.0, "alpha": 1.0}}),
        "chain: stratified (POS, proportional, min 1000) -> Quad (influence, alpha 1)": ("chain", {
            "allocate": {"method": "stratified", "mode": "proportional", "min_per_group": 1000},
            "within": {"method": "quad", "scorer": "influence", "probe": args.probe, "chunk": args.chunk,
                       "clusters_per_round": 50, "tau": 0.0, "alpha": 1.0}}),
    }
    md_tables = []
    for setting, labels in settings.items():
        pool = Pool(ids=np.arange(len(pool_idx)).astype(str), embeddings=Xp, groups=pos_code[pool_idx],
                    group_names=tuple(group_names), clusters=km.labels_, labels=labels, reference=reference)
        relabelled = labels != y_clean
        full, _ = evaluate(Xp, labels, X[test], y[test], pos[test])
        print(f"\n== {setting}: {relabelled.mean():.1%} relabelled; full pool accuracy {full:.4f}; "
              f"budget {budget}", flush=True)
        rows = []
        for name, spec in methods.items():
            res = {k: [] for k in ("acc", "worst", "calls", "covered", "classes", "vendi", "noisy", "secs", "n")}
            for seed in range(args.seeds):
                t0 = time.perf_counter()
                if callable(spec):
                    sel = spec(pool, budget)
                else:
                    sel = build_selector(spec[0], **spec[1]).select(pool, budget, rng=np.random.default_rng(seed))
                res["secs"].append(time.perf_counter() - t0)
                idx = sel.indices
                res["n"].append(len(idx))
                acc, worst = evaluate(Xp[idx], labels[idx], X[test], y[test], pos[test])
                res["acc"].append(acc)
                res["worst"].append(worst)
                res["calls"].append(scorer_calls(sel))
                res["covered"].append(len(np.unique(km.labels_[idx])))
                res["classes"].append(len(np.unique(y_clean[idx])))
                res["vendi"].append(vendi_score(Xp[idx]))
                res["noisy"].append(float(relabelled[idx].mean()))
                if callable(spec):  # deterministic: one run is every run
                    for v in res.values():
                        v.extend([v[0]] * (args.seeds - 1))
                    break
            row = {"method": name, **{k: (float(np.mean(v)), float(np.std(v))) for k, v in res.items()}}
            rows.append(row)
            print(f"{name:34s} acc {row['acc'][0]:.4f}±{row['acc'][1]:.4f}  worst POS {row['worst'][0]:.4f}  calls {row['calls'][0]:8.0f}  "
                  f"covered {row['covered'][0]:5.0f}  classes {row['classes'][0]:4.1f}  vendi {row['vendi'][0]:6.1f}  relabelled {row['noisy'][0]:.3f}  "
                  f"n {row['n'][0]:.0f}  {row['secs'][0]:.1f}s", flush=True)
        md_tables.append(report_table(setting, rows, full, relabelled.mean()))

    md = [
        "# Quad benchmark: quality vs scorer calls on real labelled text",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `.venv/bin/python bench/quad.py --k {args.k} --fraction {args.fraction} --seeds {args.seeds} "
        f"--alphas {args.alphas} --probe {args.probe} --chunk {args.chunk}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"{load_before[0]:.1f} at the start and {os.getloadavg()[0]:.1f} at the end",
        f"- data: WordNet 3.0 glosses, label = lexicographer category ({len(classes)} classes); pool "
        f"{len(pool_idx)}, reference {len(ref)} (2%, clean), test {len(test)} (10%, clean)",
        "- groups: part of speech; pool rows per group: " + ", ".join(
            f"{g} {int((pos[pool_idx] == g).sum())}" for g in group_names)
        + "; test rows: " + ", ".join(f"{g} {int((pos[test] == g).sum())}" for g in group_names),
        f"- embeddings: packaged all-MiniLM-L6-v2 (max 128 tokens, normalised); spherical k-means k={args.k}",
        f"- budget {budget} ({args.fraction:.0%} of the pool); downstream: ridge classifier (alpha 1) on the "
        f"selection's embeddings, accuracy on the test set; {args.seeds} seeds (top-k is deterministic)",
        "- scorer: influence (softmax-regression proxy on 20k pool rows, l2 1e-3, exact iHVP by preconditioned CG)",
        "",
        *md_tables,
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))
    return 0


def report_table(setting: str, rows: list[dict], full: float, relabelled: float) -> str:
    top = next(r for r in rows if r["method"].startswith("top-k"))
    lines = [f"## {setting} pool ({relabelled:.1%} of the labels replaced; whole pool as training set: "
             f"accuracy {full:.4f})", "",
             "| method | accuracy | worst POS accuracy | vs top-k | scorer calls | calls vs top-k | clusters covered | classes "
             "| Vendi (q=1) | relabelled share | selected | wall s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['acc'][0]:.4f} ± {r['acc'][1]:.4f} | {r['worst'][0]:.4f} ± {r['worst'][1]:.4f} "
            f"| {r['acc'][0] / top['acc'][0]:.3f} "
            f"| {r['calls'][0]:.0f} | {r['calls'][0] / max(top['calls'][0], 1):.3f} | {r['covered'][0]:.0f} "
            f"| {r['classes'][0]:.1f} | {r['vendi'][0]:.1f} | {r['noisy'][0]:.3f} | {r['n'][0]:.0f} | {r['secs'][0]:.1f} |")
    quads = [r for r in rows if r["method"].startswith("Quad")]
    by = {r["method"]: r for r in rows}
    plain = by.get("Quad (influence, alpha 1)")
    hits = [r["method"] for r in quads if r["acc"][0] >= 0.95 * top["acc"][0] and r["calls"][0] <= 0.1 * top["calls"][0]
            and r["covered"][0] > top["covered"][0]]
    lines += ["", f"Target (Quad ≥ 0.95 × top-k accuracy with ≤ 10% of its scorer calls and more clusters covered): "
              f"**{'met by ' + ', '.join(hits) if hits else 'not met'}**.", ""]
    for chain in (r for r in rows if r["method"].startswith("chain") and plain is not None):
        lines += [f"{chain['method']} vs Quad alone (alpha 1): worst POS accuracy {chain['worst'][0]:.4f} vs "
                  f"{plain['worst'][0]:.4f} ({chain['worst'][0] - plain['worst'][0]:+.4f}), accuracy "
                  f"{chain['acc'][0]:.4f} vs {plain['acc'][0]:.4f} ({chain['acc'][0] - plain['acc'][0]:+.4f}), "
                  f"scorer calls {chain['calls'][0]:.0f} vs {plain['calls'][0]:.0f}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
