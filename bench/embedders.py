"""Embedder comparison on real text: MiniLM vs static-minilm vs hashing, speed and quality.

    .venv/bin/python bench/embedders.py [--minilm-n 2000] [--fast-n 10000] [--gloss-sample 20000] [--threads N]

Embedders: the packaged all-MiniLM-L6-v2 (``max_seq_length`` 128, batches of 64), ``static-minilm``
(token table distilled from it, :mod:`curation.embed.static`; all tokens of a text, batches of
``--static-batch``) and ``hashing`` (64-d character trigrams). All vectors L2-normalised; torch
and the tokenizers use ``--threads`` threads (default ``os.cpu_count()``).

1. **Distillation**: the static model is distilled from scratch into a temporary directory
   (forward passes, PCA, weighting, writing) and timed; its content hash is checked against the
   model in the cache the embedder uses (built earlier, possibly by another process: the build
   must be byte-for-byte reproducible).
2. **Throughput** (texts/s of ``embedder.embed``, model loaded and warmed up first, no embedding
   cache) at three text lengths: WordNet glosses (``data/wordnet_glosses.parquet``, median ~66
   characters), evals prompts of 250-350 and of 900-1100 characters
   (``data/evals_prompts.parquet``, distinct texts). MiniLM is slow on a small CPU, so it embeds
   only the first ``--minilm-n`` texts of each set; the others embed ``--fast-n`` texts (the set
   repeated when it is smaller). Ratios are against MiniLM.
3. **Quality**, on ``--gloss-sample`` glosses (seed 0):
   (a) retrieval: the fraction of glosses whose nearest neighbour (cosine, itself excluded) has
   the same WordNet ``lexname`` (45 categories); the same on ``--prompt-sample`` evals prompts of
   the 60 largest tasks with label = task;
   (b) k-means agreement: adjusted Rand index between ``FaissKMeans(k, spherical)`` on each
   embedder and on MiniLM (MiniLM against itself with another seed is the ceiling);
   (c) downstream: a 20% stratified hold-out, a kMQ selection (``build_selector("kmq")``,
   kM-Random, and kMQ with knn-agreement quality) of ``--fraction`` of the rest built on each
   embedder's vectors and clusters, a ridge classifier (alpha 1) trained on the selection with
   lexname as the label - once on the embedder's own vectors, once on MiniLM's (so only the
   selection differs) - scored on the hold-out; mean over ``--seeds`` seeds. Random selection is
   the baseline.
4. **Weighting ablation** (``--ablate``, on by default): the same distilled token vectors with
   each token-weighting scheme, scored by (a).

MiniLM vectors for quality come from the embedding cache (``--cache``, the one ``bench/kmq.py``
and ``make demo`` use), so a rerun embeds nothing; throughput never uses the cache.
The machine may be shared: each timed region reports the CPU other processes took
(``/proc/stat``), and the report says whether the run was on a busy machine.
Result: ``bench/results/embedders.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from curation.cluster import FaissKMeans  # noqa: E402
from curation.embed import EmbeddingCache, HashingEmbedder, SentenceTransformerEmbedder, StaticEmbedder  # noqa: E402
from curation.embed import static as static_mod  # noqa: E402
from curation.pipeline import embed_texts, serial_map  # noqa: E402
from curation.select import build_selector  # noqa: E402
from curation.types import Pool  # noqa: E402

TARGET_SPEED = 30.0  # static-minilm >= 30x MiniLM's throughput ...
TARGET_QUALITY = 0.9  # ... at >= 0.9 of its retrieval quality
BUSY = 0.1  # cores taken by other processes during a timed region before the run counts as busy


# ------------------------------------------------------------------------------- CPU accounting
def _machine_busy() -> float:
    """Machine-wide busy CPU seconds (all cores, hypervisor steal counted as busy); 0 without /proc."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except OSError:
        return 0.0
    user, nice, system, _idle, _iowait, irq, softirq, steal = v
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class Timer:
    """Wall time, and cores other processes kept busy meanwhile (machine busy - this process)."""

    def __enter__(self) -> Timer:
        self.m0, self.p0, self.t0 = _machine_busy(), time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.t0
        self.cpu = time.process_time() - self.p0  # this process, all its threads
        self.others = max(0.0, _machine_busy() - self.m0 - self.cpu) / max(self.wall, 1e-9)


# ------------------------------------------------------------------------------------- data
def load_sets(args: argparse.Namespace) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, list[str]]]:
    glosses = pl.read_parquet(ROOT / "data" / "wordnet_glosses.parquet").sample(args.gloss_sample, seed=0)
    prompts = pl.read_parquet(ROOT / "data" / "evals_prompts.parquet").unique("text", keep="first",
                                                                              maintain_order=True)
    n_chars = prompts["text"].str.len_chars()
    rng = np.random.default_rng(0)

    def shuffled(texts: list[str]) -> list[str]:
        return [texts[i] for i in rng.permutation(len(texts))]

    lengths = {
        "short (WordNet glosses)": glosses["text"].to_list(),
        "~300 chars (prompts 250-350)": shuffled(prompts.filter((n_chars >= 250) & (n_chars <= 350))["text"].to_list()),
        "~1000 chars (prompts 900-1100)": shuffled(prompts.filter((n_chars >= 900) & (n_chars <= 1100))["text"].to_list()),
    }
    top = prompts.group_by("task").len().sort(["len", "task"], descending=[True, False]).head(60)["task"]
    tasks = prompts.filter(pl.col("task").is_in(top.to_list()))
    tasks = tasks.sample(min(args.prompt_sample, len(tasks)), seed=0)
    return glosses, tasks, lengths


# ------------------------------------------------------------------------------------ quality
def nn_agreement(X: np.ndarray, labels: np.ndarray, block: int = 2048) -> float:
    """Fraction of rows whose nearest other row (inner product) has the same label."""
    hits = 0
    for s in range(0, len(X), block):
        S = X[s : s + block] @ X.T
        S[np.arange(len(S)), np.arange(s, s + len(S))] = -np.inf
        hits += int((labels[S.argmax(axis=1)] == labels[s : s + block]).sum())
    return hits / len(X)


def kmeans_labels(X: np.ndarray, k: int, seed: int) -> np.ndarray:
    return FaissKMeans(k, spherical=True).fit(X, rng=np.random.default_rng(seed)).labels_


def ridge_accuracy(Xtr: np.ndarray, ytr: np.ndarray, Xte: np.ndarray, yte: np.ndarray) -> float:
    from sklearn.linear_model import RidgeClassifier

    return float((RidgeClassifier(alpha=1.0).fit(Xtr, ytr).predict(Xte) == yte).mean())


SELECTIONS = {
    "random": ("random", {}),
    "kM-Random": ("kmq", {}),
    "kMQ (knn-agreement)": ("kmq", {"quality": {"name": "knn-agreement", "k": 10}, "temperature": 0.2}),
}


def downstream(X: np.ndarray, X_ref: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> dict[str, tuple]:
    """{selection: (accuracy on own vectors, accuracy on MiniLM vectors)}, means over seeds."""
    rng = np.random.default_rng(0)
    test = np.zeros(len(y), bool)
    for c in np.unique(y):  # stratified 20% hold-out, the same for every embedder
        members = np.flatnonzero(y == c)
        test[rng.choice(members, size=max(1, len(members) // 5), replace=False)] = True
    pool_idx = np.flatnonzero(~test)
    Xp = np.ascontiguousarray(X[pool_idx])
    clusters = kmeans_labels(Xp, args.k, 0)
    pool = Pool(ids=pool_idx.astype(str), embeddings=Xp, groups=np.zeros(len(pool_idx), np.int64),
                group_names=("*",), clusters=clusters, labels=y[pool_idx])
    budget = int(round(args.fraction * len(pool)))
    out = {}
    for name, (method, params) in SELECTIONS.items():
        own, ref = [], []
        for seed in range(args.seeds):
            sel = pool_idx[build_selector(method, **params).select(pool, budget, rng=np.random.default_rng(seed)).indices]
            own.append(ridge_accuracy(X[sel], y[sel], X[test], y[test]))
            ref.append(ridge_accuracy(X_ref[sel], y[sel], X_ref[test], y[test]))
        out[name] = (float(np.mean(own)), float(np.std(own)), float(np.mean(ref)), float(np.std(ref)))
    return out


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm-n", type=int, default=2000, help="texts per length MiniLM embeds for throughput")
    ap.add_argument("--fast-n", type=int, default=10000, help="texts per length static/hashing embed")
    ap.add_argument("--gloss-sample", type=int, default=20000, help="glosses for the quality measures")
    ap.add_argument("--prompt-sample", type=int, default=10000, help="prompts for the task-retrieval measure")
    ap.add_argument("--k", type=int, default=64, help="k-means clusters (ARI and the kMQ pool)")
    ap.add_argument("--fraction", type=float, default=0.1, help="kMQ budget, fraction of the pool")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None,
                    help="torch and tokenizer threads (default: os.cpu_count()); 1 gives per-core costs")
    ap.add_argument("--static-batch", type=int, default=1024, help="static-minilm encode batch size")
    ap.add_argument("--no-ablate", dest="ablate", action="store_false", help="skip the weighting ablation")
    ap.add_argument("--model-cache", default=None, help="static model cache dir (default: the user cache)")
    ap.add_argument("--cache", default=str(ROOT / "out" / ".cache" / "embeddings"), help="MiniLM vector cache")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "embedders.md"))
    args = ap.parse_args(argv)
    threads = args.threads or os.cpu_count() or 1
    os.environ["RAYON_NUM_THREADS"] = str(threads)  # the Rust tokenizers' pool; before tokenizers loads

    import sentence_transformers
    import torch
    from sklearn.metrics import adjusted_rand_score

    torch.set_num_threads(threads)
    glosses, tasks, lengths = load_sets(args)
    g_text, g_lab = glosses["text"].to_list(), glosses["lexname"].to_numpy().astype(str)
    t_text, t_lab = tasks["text"].to_list(), tasks["task"].to_numpy().astype(str)
    minilm = SentenceTransformerEmbedder("all-MiniLM-L6-v2", max_seq_length=128, batch_size=64)
    static = StaticEmbedder(cache_dir=args.model_cache, batch_size=args.static_batch)
    hashing = HashingEmbedder(dim=64)
    busy: list[float] = []  # others' cores in each throughput region

    # 1. distillation, from scratch, timed; the cached model must match it byte for byte
    cached_before = (Path(static.cache_dir) / static_mod.distill_key(
        static_mod.base_model_sha256(static_mod.resolve_model_path(static.settings.base)), static.settings)[:32]
        / "distill.json").is_file()
    with Timer() as t_cached:
        cached_sha = static.model_sha256  # builds into the cache if it is missing
    settings = static.settings
    base_path = static_mod.resolve_model_path(settings.base)
    with Timer() as t_fwd:
        tokenizer, n_vocab, ids, vectors = static_mod.token_vectors(base_path, settings)
    with Timer() as t_rest, tempfile.TemporaryDirectory() as tmp:
        table = static_mod.reduce_and_weight(vectors, ids, n_vocab, settings)
        fresh_sha = static_mod.write_model(Path(tmp) / "m", table, tokenizer, {})
    distill_others = max(t_fwd.others, t_rest.others)
    distill_s = t_fwd.wall + t_rest.wall
    print(f"distillation {distill_s:.1f}s (forward {t_fwd.wall:.1f}s), reproducible: {fresh_sha == cached_sha}",
          flush=True)

    # 2. throughput
    def timed(emb, texts: list[str]) -> tuple[float, float, float]:
        emb.embed(texts[:64])  # load + warm up
        with Timer() as t:
            X = emb.embed(texts)
        assert X.shape[0] == len(texts)
        busy.append(t.others)
        return len(texts) / t.wall, t.others, 1000 * t.cpu / len(texts)

    speed: dict[str, dict[str, tuple[float, float, int, float]]] = {}
    for name, texts in lengths.items():
        fast = (texts * (args.fast_n // len(texts) + 1))[: args.fast_n]
        row = {}
        for label, emb, sample in (("MiniLM", minilm, texts[: args.minilm_n]), ("static-minilm", static, fast),
                                   ("hashing", hashing, fast)):
            rate, others, cpu_ms = timed(emb, sample)
            row[label] = (rate, others, len(sample), cpu_ms)
            print(f"{name:32s} {label:14s} {rate:10.1f} texts/s (n={len(sample)}, others {others:.2f} cores)",
                  flush=True)
        speed[name] = row

    # 3. quality
    cache = EmbeddingCache(args.cache, minilm.id)
    with Timer() as t_q:
        Xg_m, counts = embed_texts(g_text, minilm, cache=cache, map_chunks=serial_map(minilm))
        Xt_m, counts_t = embed_texts(t_text, minilm, cache=cache, map_chunks=serial_map(minilm))
    print(f"MiniLM quality vectors: glosses {counts}, prompts {counts_t} ({t_q.wall:.0f}s)", flush=True)
    vecs = {"MiniLM": (Xg_m, Xt_m), "static-minilm": (static.embed(g_text), static.embed(t_text)),
            "hashing": (hashing.embed(g_text), hashing.embed(t_text))}
    ref_km = kmeans_labels(Xg_m, args.k, 0)
    ceiling = adjusted_rand_score(ref_km, kmeans_labels(Xg_m, args.k, 1))
    quality = {}
    for label, (Xg, Xt) in vecs.items():
        km = kmeans_labels(Xg, args.k, 0)
        quality[label] = {
            "gloss_nn": nn_agreement(Xg, g_lab), "prompt_nn": nn_agreement(Xt, t_lab),
            "ari_minilm": adjusted_rand_score(ref_km, km), "ari_lexname": adjusted_rand_score(g_lab, km),
            "downstream": downstream(Xg, Xg_m, g_lab, args),
        }
        print(label, {k: v for k, v in quality[label].items()}, flush=True)

    # 4. weighting ablation on the same token vectors
    ablation = []
    if args.ablate:
        for weighting, coef in (("none", 0.0), ("sif", 1e-3), ("sif", 1e-4), ("log-rank", 0.0)):
            s = static_mod.DistillSettings(weighting=weighting, sif_coefficient=coef or 1e-3)
            model = static_mod.as_sentence_transformer(tokenizer, static_mod.reduce_and_weight(vectors, ids, n_vocab, s))

            def enc(texts, model=model):
                return model.encode(texts, batch_size=args.static_batch, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)

            ablation.append((weighting + (f" (a={coef:g})" if weighting == "sif" else ""),
                             nn_agreement(enc(g_text), g_lab), nn_agreement(enc(t_text), t_lab)))
            print("ablation", ablation[-1], flush=True)

    # ------------------------------------------------------------------------------ report
    q_m = quality["MiniLM"]
    fmt_ratio = lambda a, b: f"{a / b:.1f}x" if b else "-"  # noqa: E731
    speed_rows = ["| text length | MiniLM texts/s | static-minilm texts/s | hashing texts/s | static / MiniLM "
                  "| hashing / MiniLM | CPU ms/text: MiniLM, static, hashing | static / MiniLM by CPU time "
                  "| others' cores (max) |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    ratios = []
    for name, row in speed.items():
        m, s, h = row["MiniLM"], row["static-minilm"], row["hashing"]
        ratios.append(s[0] / m[0])
        speed_rows.append(f"| {name} | {m[0]:,.1f} (n={m[2]}) | {s[0]:,.0f} (n={s[2]}) | {h[0]:,.0f} (n={h[2]}) "
                          f"| {fmt_ratio(s[0], m[0])} | {fmt_ratio(h[0], m[0])} "
                          f"| {m[3]:.2f}, {s[3]:.3f}, {h[3]:.3f} | {fmt_ratio(m[3], s[3])} "
                          f"| {max(m[1], s[1], h[1]):.2f} |")
    q_rows = ["| embedder | gloss NN same lexname | ratio | prompt NN same task | ratio | ARI vs MiniLM k-means "
              "| ARI vs lexname |", "|---|---:|---:|---:|---:|---:|---:|"]
    for label, q in quality.items():
        q_rows.append(f"| {label} | {q['gloss_nn']:.4f} | {q['gloss_nn'] / q_m['gloss_nn']:.3f} | {q['prompt_nn']:.4f} "
                      f"| {q['prompt_nn'] / q_m['prompt_nn']:.3f} | {q['ari_minilm']:.3f} | {q['ari_lexname']:.3f} |")
    d_rows = ["| selection built on | " + " | ".join(f"{s} (own vectors)" for s in SELECTIONS) + " | "
              + " | ".join(f"{s} (MiniLM vectors)" for s in SELECTIONS) + " |",
              "|---|" + "---:|" * (2 * len(SELECTIONS))]
    for label, q in quality.items():
        d = q["downstream"]
        d_rows.append(f"| {label} | " + " | ".join(f"{d[s][0]:.4f} ± {d[s][1]:.4f}" for s in SELECTIONS) + " | "
                      + " | ".join(f"{d[s][2]:.4f} ± {d[s][3]:.4f}" for s in SELECTIONS) + " |")
    a_rows = ["| token weighting | gloss NN same lexname | prompt NN same task |", "|---|---:|---:|"]
    a_rows += [f"| {w}{' (default)' if w == 'sif (a=0.001)' else ''} | {g:.4f} | {p:.4f} |" for w, g, p in ablation]

    first_use = (f"The embedder's first use found the model in the cache ({t_cached.wall:.2f} s to read its hash)."
                 if cached_before else
                 f"The cache lacked the model, so the embedder's first use built it there: {t_cached.wall:.1f} s "
                 f"(others' cores {t_cached.others:.2f}); the from-scratch build above is a second, independent build.")
    q_ratio = quality["static-minilm"]["gloss_nn"] / q_m["gloss_nn"]
    met = min(ratios) >= TARGET_SPEED and q_ratio >= TARGET_QUALITY
    was_busy = max(busy) > BUSY
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    cmd = " ".join([".venv/bin/python bench/embedders.py", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    md = [
        "# Embedders: MiniLM vs static-minilm vs hashing",
        "",
        f"- date: {datetime.now(timezone.utc).isoformat(timespec='seconds')}",
        f"- command: `{cmd}` (repository root; HF_HUB_OFFLINE=1)",
        f"- machine: {cpu}, os.cpu_count()={os.cpu_count()}, {platform.platform()}; torch threads "
        f"{torch.get_num_threads()}, tokenizer threads {os.environ['RAYON_NUM_THREADS']}",
        (f"- **{'busy' if was_busy else 'quiet'} machine during the throughput runs**: other processes took up to "
         f"{max(busy):.2f} cores in a timed region (per row below)"
         + (" - absolute rates are depressed by that contention; ratios less so, as every embedder ran under it"
            if was_busy else "")
         + f"; during the distillation: {distill_others:.2f} cores"
         + (" (its time is inflated accordingly)" if distill_others > BUSY else "")),
        f"- versions: python {platform.python_version()}, torch {torch.__version__}, sentence-transformers "
        f"{sentence_transformers.__version__}",
        f"- static-minilm: `{static.id}`, model dir `{static.model_dir}`",
        "",
        "## Distillation",
        "",
        f"From scratch: {distill_s:.1f} s ({t_fwd.wall:.1f} s forward passes over {len(ids):,} tokens, "
        f"{t_rest.wall:.1f} s PCA + weighting + writing; others' cores {distill_others:.2f}). "
        f"Content hash of the fresh build {'equals' if fresh_sha == cached_sha else '**differs from**'} the cached "
        f"model's (`{cached_sha[:16]}`){'' if fresh_sha == cached_sha else f' (fresh `{fresh_sha[:16]}`)'}. "
        + first_use,
        "",
        "## Throughput",
        "",
        f"MiniLM: max_seq_length 128, batch 64, the first {args.minilm_n} texts of each set (fewer where the set is "
        f"smaller). static-minilm: all tokens (no truncation), batch {args.static_batch}; hashing: 64-d. Those two "
        f"embed {args.fast_n} texts (the set repeated). `embed()` only; model load and warm-up excluded.",
        "",
        *speed_rows,
        "",
        "## Quality",
        "",
        f"{len(g_text):,} WordNet glosses (seed 0; 45 lexnames) and {len(t_text):,} evals prompts (60 largest tasks). "
        f"k-means: FaissKMeans(k={args.k}, spherical), seed 0; MiniLM against itself with seed 1: ARI {ceiling:.3f} "
        "(the ceiling for 'ARI vs MiniLM').",
        "",
        *q_rows,
        "",
        f"Downstream: ridge classifier (lexname) trained on a {args.fraction:.0%} selection of the pool "
        f"(80% of the glosses, the same stratified hold-out for all), accuracy on the hold-out, mean ± std over "
        f"{args.seeds} seeds. 'Own vectors' trains on the embedder's vectors; 'MiniLM vectors' trains on MiniLM's "
        "vectors of the same selected rows (only the selection differs).",
        "",
        *d_rows,
        "",
    ]
    if ablation:
        md += ["## Token weighting ablation (same distilled token vectors and PCA)", "", *a_rows, ""]
    md += [
        f"Targets (static-minilm): >= {TARGET_SPEED:.0f}x MiniLM's throughput at every length (min {min(ratios):.1f}x) "
        f"at >= {TARGET_QUALITY} of its gloss retrieval quality ({q_ratio:.3f}): **{'met' if met else 'NOT met'}**.",
        "",
    ]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(md))
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
