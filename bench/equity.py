"""Equity benchmark: does adaptive MaxMin allocation across groups lower the worst group's error?

    .venv/bin/python bench/equity.py [--seeds 5] [--datasets adult,compas] [--quick]
    .venv/bin/python bench/equity.py --datasets wordnet --group-features 0 --out bench/results/equity_text.md

Real tabular data with intersectional groups (race × sex): Adult census income and COMPAS
two-year recidivism (`.venv/bin/python infra/data/fetch_fairness.py` writes both); and real text:
the WordNet 3.0 glosses (`infra/data/fetch_wordnet.py`), label = the lexicographer category (45
classes), groups = the part of speech (noun, verb, adjective, adverb: 70% / 12% / 15% / 3% of the
glosses), features = the packaged MiniLM's embedding of the gloss (through the embedding cache,
so a rerun embeds nothing). The text set runs with the shared proxy (``--group-features 0``):
the downstream classifier does not see the part of speech, and the proxy has to be the model
whose errors the allocation plans against (docs/methods/group-adaptive.md#the-proxy-learner).
Per seed the
rows are split into a **pool** (what selection draws from), a **validation** set (the selector's
``reference``: labelled rows with group codes, stratified by group × label, used only by the
selector's proxy learner to measure per-group errors) and a **test** set used only for the final
evaluation (Adult: the official ``split == "test"`` rows; COMPAS: a stratified 25%).

For every budget the ``group-adaptive`` selector picks rows with four allocations, all with the
same seed: ``equal``, ``proportional`` (pool shares), ``adaptive`` (objective ``maxmin``) and
``oracle`` (static MaxMin optimum of curves measured on the whole pool); and the **composed**
selection (``chain``) fills the adaptive quotas with kMQ inside each group. Paired differences
(method − baseline, same seed and split) are reported with 95% t-intervals over the seeds. The same downstream
classifier (sklearn ``LogisticRegression(max_iter=1000)``, C = 1) is trained on each selection
and scored per group on the test set. Reported: worst-group error (all groups, and only groups
with >= 100 test rows), overall test error, the unweighted mean of the group errors, the gap
(max − min group error), allocation counts, and the selector's wall time.

Threads: BLAS/OpenMP are pinned to one thread (the machine is shared; oversubscribed threads
make the many small logistic fits 10-20x slower). ``--quick`` runs one seed at the smallest
budget of each dataset (~2 minutes) and writes ``out/equity_quick.md``.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.cluster import FaissKMeans  # noqa: E402
from curation.embed import TabularEncoder  # noqa: E402
from curation.select import build_selector  # noqa: E402
from curation.select.group_adaptive import GroupAdaptiveSelector  # noqa: E402
from curation.types import Pool, Reference  # noqa: E402

ALLOCATIONS = ("equal", "proportional", "adaptive", "oracle", "composed")
K = 16  # k-means clusters of the pool's encoded features, for the composed selection's kMQ
MIN_TEST = 100  # groups with fewer test rows are left out of the second worst-group column
# selector hyperparameters, fixed a priori (library defaults except n0, scaled to the smallest budget)
SELECTOR = {"objective": "maxmin", "step_frac": 0.05, "repeats": 2, "C": 1.0, "oracle_rounds": 3}


@dataclass
class Spec:
    name: str
    path: str
    label: str
    features: list[str]
    numeric: list[str]
    budgets: list[int]
    n0: int
    note: str
    text: str | None = None  # a text column: the features are its MiniLM embedding
    frame: pl.DataFrame = field(default=None, repr=False)  # type: ignore[assignment]

    def features_note(self) -> str:
        if self.text is not None:
            return (f"the packaged all-MiniLM-L6-v2 embedding of `{self.text}` (384 dimensions, max 128 tokens, "
                    "normalised); the part of speech is **not** a feature (it defines the groups), though a "
                    "gloss's wording often shows it")
        return (f"({len(self.features)}): {', '.join(self.features)}; race and sex are **not** features "
                "(they define the groups only)")


SPECS = {
    "adult": Spec(
        "adult", "adult.parquet", "income",
        ["age", "workclass", "education_num", "marital_status", "occupation", "relationship", "capital_gain",
         "capital_loss", "hours_per_week", "native_country"],
        ["education_num", "capital_gain", "capital_loss", "hours_per_week"],
        [2000, 5000, 10000], 50,
        "Adult census income (48,842 rows), label income >50K; groups race × sex (10); test = the official "
        "`split == test` rows (16,281); validation = 20% of the official train rows, stratified by group × "
        "label; pool = the other 80% of the train rows"),
    "compas": Spec(
        "compas", "compas.parquet", "two_year_recid",
        ["age", "age_cat", "priors_count", "c_charge_degree", "juv_fel_count", "juv_misd_count", "juv_other_count"],
        [], [1000, 2000, 3000], 30,
        "COMPAS two-year recidivism (all 7,214 rows of compas-scores-two-years, no ProPublica filtering), label "
        "two_year_recid; groups race × sex with Asian (32 rows) and Native American (18 rows) folded into Other "
        "(8 groups; unfolded, Asian|Female has 2 rows); per seed a stratified (group × label) 25% test, 20% "
        "validation and 55% pool; budgets 1k/2k/3k because the pool has only ~4k rows"),
    "wordnet": Spec(
        "wordnet", "wordnet_glosses.parquet", "lexname", [], [], [1000, 2000, 4000], 50,
        "WordNet 3.0 glosses (117,033), label = lexicographer category (45 classes: 26 noun, 15 verb, 3 "
        "adjective, 1 adverb category), groups = part of speech (4); per seed a stratified (group × label) 25% "
        "test, 20% validation and 55% pool", text="text"),
}


def load(spec: Spec) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], np.ndarray | None]:
    """Encoded features, labels (str), group codes, group names, and the fixed test mask (Adult)."""
    path = ROOT / "data" / spec.path
    if not path.exists():
        fetch = "fetch_wordnet.py --install" if spec.text else "fetch_fairness.py"
        sys.exit(f"{path} is missing: run `.venv/bin/python infra/data/{fetch}` first")
    df = pl.read_parquet(path)
    if spec.text is not None:
        return load_text(spec, df)
    df = df.with_columns([pl.col(c).cast(pl.Float64, strict=False) for c in spec.numeric])
    if spec.name == "compas":
        race = pl.when(pl.col("race").is_in(["Asian", "Native American"])).then(pl.lit("Other")).otherwise(pl.col("race"))
        df = df.with_columns((race + "|" + pl.col("sex")).alias("race_sex"))
    spec.frame = df
    # the encoder is label-free (standardisation + one-hot layout); fitted once on every row
    X = TabularEncoder(spec.features).fit(df).transform(df)
    y = df[spec.label].cast(pl.String).to_numpy().astype(str)
    names, codes = np.unique(df["race_sex"].to_numpy().astype(str), return_inverse=True)
    test = (df["split"] == "test").to_numpy() if "split" in df.columns else None
    return X, y, codes.astype(np.int64), tuple(str(n) for n in names), test


def load_text(spec: Spec, df: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...], None]:
    """:func:`load` for a text set: MiniLM embeddings (cached), labels, part-of-speech groups."""
    from curation.embed import EmbeddingCache, SentenceTransformerEmbedder
    from curation.pipeline import embed_texts, serial_map

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    spec.frame = df
    import torch

    emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2", max_seq_length=128)
    t0 = time.perf_counter()
    torch.set_num_threads(os.cpu_count() or 1)  # embedding is one big job: every core (then back to 1)
    try:
        X, counts = embed_texts(df[spec.text].to_list(), emb, map_chunks=serial_map(emb),
                                cache=EmbeddingCache(ROOT / "out" / ".cache" / "embeddings", emb.id))
    finally:
        torch.set_num_threads(1)
    print(f"[{spec.name}] embeddings: {counts} in {time.perf_counter() - t0:.1f}s", flush=True)
    y = df[spec.label].to_numpy().astype(str)
    names, codes = np.unique(np.char.partition(y, ".")[:, 0], return_inverse=True)  # noun.animal -> noun
    return X, y, codes.astype(np.int64), tuple(str(n) for n in names), None


def split(y: np.ndarray, groups: np.ndarray, fixed_test: np.ndarray | None, seed: int,
          f_test: float = 0.25, f_val: float = 0.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pool, validation, test row indices: stratified by group × label; every stratum of >= 3 rows
    gives at least one validation (and test) row."""
    rng = np.random.default_rng(10_000 + seed)
    part = np.full(len(y), -1)  # 0 pool, 1 validation, 2 test
    if fixed_test is not None:
        part[fixed_test] = 2
    key = np.unique(np.char.add(groups.astype(str), np.char.add("|", y)), return_inverse=True)[1]
    for k in range(key.max() + 1):
        rows = rng.permutation(np.flatnonzero((key == k) & (part == -1)))
        n = len(rows)
        n_test = 0 if fixed_test is not None else int(round(f_test * n))
        n_val = int(round(f_val * n))
        if n >= 3:
            n_val = max(n_val, 1)
            n_test = n_test if fixed_test is not None else max(n_test, 1)
        part[rows[:n_test]] = 2
        part[rows[n_test:n_test + n_val]] = 1
        part[rows[n_test + n_val:]] = 0
    return np.flatnonzero(part == 0), np.flatnonzero(part == 1), np.flatnonzero(part == 2)


def group_errors(Xtr, ytr, Xte, yte, gte, G: int) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rare ConvergenceWarning at max_iter=1000 is not worth the noise
        clf = LogisticRegression(max_iter=1000).fit(Xtr, ytr)
    wrong = clf.predict(Xte) != yte
    return np.array([wrong[gte == g].mean() if (gte == g).any() else np.nan for g in range(G)]), float(wrong.mean())


def run_dataset(spec: Spec, seeds: int, budgets: list[int], t_start: float) -> dict:
    X, y, groups, names, fixed_test = load(spec)
    G = len(names)
    print(f"\n=== {spec.name}: {len(y)} rows, {X.shape[1]} features, {G} groups, budgets {budgets}", flush=True)
    records = []  # one per (seed, budget, allocation)
    sizes = []  # per seed: (pool, val, test) rows per group
    full = []  # whole pool as training set
    for seed in range(seeds):
        pool_idx, val_idx, test_idx = split(y, groups, fixed_test, seed)
        sizes.append(np.stack([np.bincount(groups[i], minlength=G) for i in (pool_idx, val_idx, test_idx)]))
        ref = Reference(ids=val_idx.astype(str), embeddings=X[val_idx], labels=y[val_idx], origin="validation",
                        groups=groups[val_idx])
        clusters = FaissKMeans(K).fit(X[pool_idx], rng=np.random.default_rng(seed)).labels_
        pool = Pool(ids=pool_idx.astype(str), embeddings=X[pool_idx], groups=groups[pool_idx], group_names=names,
                    labels=y[pool_idx], reference=ref, clusters=clusters)
        Xte, yte, gte = X[test_idx], y[test_idx], groups[test_idx]
        big = np.bincount(gte, minlength=G) >= MIN_TEST
        errs, overall = group_errors(X[pool_idx], y[pool_idx], Xte, yte, gte, G)
        full.append((float(np.nanmax(errs)), float(np.nanmax(errs[big])), overall))
        print(f"[{spec.name} seed {seed}] pool {len(pool_idx)}, validation {len(val_idx)}, test {len(test_idx)}; "
              f"whole pool: worst {full[-1][0]:.4f}, overall {overall:.4f}", flush=True)
        for budget in budgets:
            worst = {}
            for alloc in ALLOCATIONS:
                if alloc == "composed":  # adaptive MaxMin quotas, each filled by kMQ inside the group
                    sel_obj = build_selector("chain", within={"method": "kmq"}, allocate={
                        "method": "group-adaptive", "allocation": "adaptive", "n0": spec.n0, **SELECTOR})
                else:
                    sel_obj = GroupAdaptiveSelector(allocation=alloc, n0=spec.n0, **SELECTOR)
                t0 = time.perf_counter()
                sel = sel_obj.select(pool, budget, rng=np.random.default_rng(seed))
                secs = time.perf_counter() - t0
                info = sel.info["steps"]["allocate"]["info"] if alloc == "composed" else sel.info
                idx = sel.indices
                errs, overall = group_errors(pool.embeddings[idx], pool.labels[idx], Xte, yte, gte, G)
                counts = np.bincount(pool.groups[idx], minlength=G)
                rec = {"seed": seed, "budget": budget, "alloc": alloc, "errors": errs, "counts": counts,
                       "worst": float(np.nanmax(errs)), "worst_big": float(np.nanmax(errs[big])),
                       "worst_name": names[int(np.nanargmax(errs))], "overall": overall,
                       "group_mean": float(np.nanmean(errs)), "gap": float(np.nanmax(errs) - np.nanmin(errs)),
                       "n": len(idx), "secs": secs, "val_worst": info["equity"]["worst_group_error"],
                       "steps": info.get("steps"), "short": info["equity"]["short_groups"],
                       "kept": (info["equity"].get("check") or {}).get("kept")}
                records.append(rec)
                worst[alloc] = rec["worst"]
                print(f"[{spec.name} seed {seed} B={budget}] {alloc:12s} worst {rec['worst']:.4f} "
                      f"(>= {MIN_TEST} test: {rec['worst_big']:.4f}, {rec['worst_name']}) overall {overall:.4f} "
                      f"gap {rec['gap']:.4f} n {len(idx)} {secs:6.1f}s  [total {time.perf_counter() - t_start:.0f}s]",
                      flush=True)
            print(f"[{spec.name} seed {seed} B={budget}] worst-group ratio adaptive/proportional "
                  f"{worst['adaptive'] / worst['proportional']:.3f}, oracle/proportional "
                  f"{worst['oracle'] / worst['proportional']:.3f}", flush=True)
    return {"spec": spec, "names": names, "records": records, "sizes": np.stack(sizes), "full": np.array(full),
            "budgets": budgets, "seeds": seeds}


def ms(values) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.4f} ± {v.std():.4f}"


def interval(d: np.ndarray) -> tuple[float, float]:
    """95% t-interval of the mean of paired differences ``d`` (NaN for fewer than 2 seeds)."""
    from scipy import stats

    if len(d) < 2:
        return float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d)))
    return float(d.mean() - half), float(d.mean() + half)


def pick(records, **kw) -> list[dict]:
    return [r for r in records if all(r[k] == v for k, v in kw.items())]


def report(res: dict) -> tuple[list[str], list[str]]:
    """Markdown lines for one dataset, and one-line target verdicts."""
    spec, names, recs, budgets = res["spec"], res["names"], res["records"], res["budgets"]
    sizes = res["sizes"]  # (seeds, 3, G)
    out = [f"## {spec.name}", "", f"- data: {spec.note}",
           f"- features {spec.features_note()}; selector n0 = {spec.n0}", ""]
    out += ["Rows per group (mean over seeds; test rows are what the per-group test errors rest on):", "",
            "| group | pool | validation | test | test ≥ 100 |", "|---|---:|---:|---:|:---:|"]
    m = sizes.mean(axis=0)
    for g in np.argsort(-m[0]):
        out.append(f"| {names[g]} | {m[0, g]:.0f} | {m[1, g]:.0f} | {m[2, g]:.0f} | "
                   f"{'yes' if m[2, g] >= MIN_TEST else 'no'} |")
    full = res["full"]
    out += ["", f"Whole pool as training set (no selection): worst-group error {ms(full[:, 0])}, "
            f"worst over groups with ≥ {MIN_TEST} test rows {ms(full[:, 1])}, overall test error {ms(full[:, 2])}.", ""]
    out += ["| budget | allocation | worst-group error | worst (≥ 100 test rows) | overall test error "
            "| mean of group errors | gap | most frequent worst group | selected | select s |",
            "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    verdicts = []
    for b in budgets:
        for alloc in ALLOCATIONS:
            rs = pick(recs, budget=b, alloc=alloc)
            wn = Counter(r["worst_name"] for r in rs).most_common(1)[0]
            out.append(f"| {b} | {alloc} | {ms([r['worst'] for r in rs])} | {ms([r['worst_big'] for r in rs])} "
                       f"| {ms([r['overall'] for r in rs])} | {ms([r['group_mean'] for r in rs])} "
                       f"| {ms([r['gap'] for r in rs])} | {wn[0]} ({wn[1]}/{len(rs)}) "
                       f"| {np.mean([r['n'] for r in rs]):.0f} | {np.mean([r['secs'] for r in rs]):.1f} |")
    out += ["", "Paired differences of the worst-group test error (Δ = method − baseline on the same seed and "
            "split; mean and 95% t-interval over seeds; wins = seeds where the method's error is lower). "
            "Target: adaptive ≤ proportional and ≤ equal at every budget, overall error within 1 point of "
            "proportional:", "",
            "| budget | method | vs | Δ worst-group | 95% interval | wins | Δ worst (≥ 100 test rows) "
            "| Δ overall error | meets? |", "|---:|---|---|---:|---|---:|---:|---:|:---:|"]
    ok_all = True
    for b in budgets:
        for method in ("adaptive", "composed"):
            for base in ("proportional", "equal"):
                a, p = pick(recs, budget=b, alloc=method), pick(recs, budget=b, alloc=base)
                dw = np.array([x["worst"] - y["worst"] for x, y in zip(a, p)])
                db = np.array([x["worst_big"] - y["worst_big"] for x, y in zip(a, p)])
                do = np.array([x["overall"] - y["overall"] for x, y in zip(a, p)])
                lo, hi = interval(dw)
                meets = dw.mean() <= 0 and (base != "proportional" or do.mean() <= 0.01)
                if method == "adaptive":
                    ok_all &= bool(meets)
                out.append(f"| {b} | {method} | {base} | {dw.mean():+.4f} | [{lo:+.4f}, {hi:+.4f}] "
                           f"| {(dw < 0).sum()}/{len(dw)} | {db.mean():+.4f} | {do.mean():+.4f} "
                           f"| {'yes' if meets else 'no'} |")
                if method == "adaptive":
                    verdicts.append(f"{spec.name} B={b}: worst-group adaptive − {base} {dw.mean():+.4f} "
                                    f"(95% [{lo:+.4f}, {hi:+.4f}], {(dw < 0).sum()}/{len(dw)} seeds lower); "
                                    f"overall Δ {do.mean():+.4f}")
    out += ["", f"Target (adaptive worst-group error at most proportional's and equal's at every budget, overall "
            f"error at most 1 point above proportional's): **{'met' if ok_all else 'not met'}** on {spec.name}.", ""]
    b = budgets[len(budgets) // 2]
    out += [f"Allocation per group at budget {b} (mean rows over seeds; pool = rows available):", "",
            "| group | pool | " + " | ".join(ALLOCATIONS) + " |", "|---|---:|" + "---:|" * len(ALLOCATIONS)]
    cnt = {a: np.mean([r["counts"] for r in pick(recs, budget=b, alloc=a)], axis=0) for a in ALLOCATIONS}
    for g in np.argsort(-m[0]):
        out.append(f"| {names[g]} | {m[0, g]:.0f} | " + " | ".join(f"{cnt[a][g]:.0f}" for a in ALLOCATIONS) + " |")
    out += ["", f"Test error per group at budget {b} (mean over seeds):", "",
            "| group | test rows | " + " | ".join(ALLOCATIONS) + " |", "|---|---:|" + "---:|" * len(ALLOCATIONS)]
    err = {a: np.mean([r["errors"] for r in pick(recs, budget=b, alloc=a)], axis=0) for a in ALLOCATIONS}
    for g in np.argsort(-m[0]):
        out.append(f"| {names[g]} | {m[2, g]:.0f} | " + " | ".join(f"{err[a][g]:.4f}" for a in ALLOCATIONS) + " |")
    steps = [r["steps"] for r in recs if r["alloc"] == "adaptive"]
    out += ["", f"Adaptive loop: {np.mean(steps):.1f} steps on average. Validation (proxy) worst-group error at the "
            f"chosen allocation, budget {b}: " + ", ".join(
                f"{a} {np.mean([r['val_worst'] for r in pick(recs, budget=b, alloc=a)]):.4f}" for a in ALLOCATIONS)
            + ".", ""]
    if SELECTOR.get("check"):
        out += ["What the check against the baselines kept (seeds; the plan, or the baseline the proxy measured "
                "better on the validation rows):", "", "| budget | adaptive | oracle | composed |", "|---:|---|---|---|"]
        for b in budgets:
            out.append(f"| {b} | " + " | ".join(
                ", ".join(f"{k} {v}" for k, v in Counter(r["kept"] for r in pick(recs, budget=b, alloc=a)).most_common())
                for a in ("adaptive", "oracle", "composed")) + " |")
        out.append("")
    return out, verdicts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--datasets", default="adult,compas", help="any of adult, compas, wordnet")
    ap.add_argument("--adult-budgets", default="2000,5000,10000")
    ap.add_argument("--compas-budgets", default="1000,2000,3000")
    ap.add_argument("--wordnet-budgets", default="1000,2000,4000")
    ap.add_argument("--group-features", type=int, default=1, help="1: the group-aware proxy (default), 0: shared")
    ap.add_argument("--flat-tol", type=float, default=0.005, help="the MaxMin flat-curve rule (0: off)")
    ap.add_argument("--check", type=int, default=1,
                    help="1: the plan is checked against the baselines on the proxy (default), 0: the plan as is")
    ap.add_argument("--quick", action="store_true", help="1 seed, the smallest budget of each dataset (~2 min)")
    ap.add_argument("--out", default=None, help="default bench/results/equity.md (out/equity_quick.md with --quick)")
    args = ap.parse_args()
    budgets = {"adult": [int(b) for b in args.adult_budgets.split(",")],
               "compas": [int(b) for b in args.compas_budgets.split(",")],
               "wordnet": [int(b) for b in args.wordnet_budgets.split(",")]}
    seeds = args.seeds
    SELECTOR.update(group_features=bool(args.group_features), flat_tol=args.flat_tol, check=bool(args.check))
    if args.quick:
        seeds = 1
        budgets = {k: v[:1] for k, v in budgets.items()}
    out_path = Path(args.out) if args.out else ROOT / ("out/equity_quick.md" if args.quick else "bench/results/equity.md")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    results = [run_dataset(SPECS[d], seeds, budgets[d], t_start) for d in datasets]
    total = time.perf_counter() - t_start
    load_after = os.getloadavg()

    sections, verdicts = [], []
    for res in results:
        s, v = report(res)
        sections += s
        verdicts += v
    cmd = " ".join([".venv/bin/python", "bench/equity.py", *sys.argv[1:]])
    md = [
        "# Equity benchmark: equal, proportional, adaptive (MaxMin), oracle and composed group allocations",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{cmd}`",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; load average "
        f"{load_before[0]:.1f} at the start and {load_after[0]:.1f} at the end (shared with other jobs: "
        f"timings are indicative); BLAS/OpenMP pinned to 1 thread; total wall time {total / 60:.1f} min",
        f"- seeds: {seeds} (a seed fixes the pool/validation/test split and the selector's rng; every "
        "allocation of a seed sees the same split and rng)",
        f"- selector: `group-adaptive`, objective maxmin, step_frac {SELECTOR['step_frac']}, repeats "
        f"{SELECTOR['repeats']}, proxy C {SELECTOR['C']}, oracle_rounds {SELECTOR['oracle_rounds']}, n0 per dataset "
        f"below, group_features {SELECTOR['group_features']}, flat_tol {SELECTOR['flat_tol']}, check "
        f"{SELECTOR['check']}; all fixed before "
        "any run (library defaults; n0 = 50 for Adult and WordNet, 30 for COMPAS so the pilot is at most ~25% of the smallest "
        "budget); proportional = pool shares; the selector measures group errors on the validation set only",
        f"- composed: `select: {{allocate: {{method: group-adaptive, allocation: adaptive, ...the same keys}}, "
        f"within: {{method: kmq}}}}` over k-means (k = {K}) clusters of the pool's encoded features: the "
        "adaptive counts, each group's quota filled by kMQ inside the group instead of a random draw",
        "- downstream: the same `LogisticRegression(max_iter=1000)` (C = 1) on the selected rows' encoded "
        "features (tabular sets: TabularEncoder, standardised numerics + one-hot categoricals, fitted label-free on "
        "all rows; WordNet: the MiniLM embeddings)",
        "- metrics on the test set: worst-group error = max over groups of the group's error rate; "
        f"\"worst (≥ {MIN_TEST} test rows)\" = the same over groups with at least {MIN_TEST} test rows only "
        "(small groups make the max noisy); overall test error = error over all test rows (row-weighted: "
        "this is the \"average error\" of the target); mean of group errors = unweighted mean over groups; "
        "gap = max − min group error. Values are mean ± std over seeds",
        "",
        *sections,
        "## Summary",
        "",
        *[f"- {v}" for v in verdicts],
        "",
    ]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text("\n".join(md))
    print("\n".join(md))
    print(f"wrote {out_path} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
