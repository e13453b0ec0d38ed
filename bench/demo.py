"""Time to a first result: `make demo`'s build, cold and warm, against the full MiniLM demo.

    .venv/bin/python bench/demo.py [--minilm-n 2000]

1. **Cold quickstart**: ``curate build examples/quickstart.yaml`` (55,726 real prompts,
   ``static-minilm``, k = 64, stratified 5,000) as a new user runs it: a fresh output root and a
   fresh model cache (``CURATION_MODEL_CACHE``), so the static model is distilled from MiniLM
   first. Wall clock of the whole command (Prefect's temporary server and Ray included), then
   the ``curate report --html`` that ``make demo`` runs after it.
2. **Warm rebuild**: the same command again: every stage is reused from the stage store.
3. **The full MiniLM demo, estimated in the same run**: ``examples/instructions.yaml`` embeds the
   same prompts with MiniLM; its embedding time is estimated from MiniLM's measured throughput
   on the first ``--minilm-n`` distinct prompts (the raw embedder, in this process, same token
   limit of 128) times the number of distinct prompts. The ratio says what the quickstart saves.

The machine's load average is recorded before and after (the machine may be shared).
Result: ``bench/results/demo.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

CURATE = str(Path(sys.executable).with_name("curate"))


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds, proc.stdout


def stage_line(stdout: str) -> str:
    return next((ln for ln in stdout.splitlines() if ln.startswith("stage seconds:")), "?")


def minilm_throughput(n: int) -> tuple[float, int]:
    """(texts/s of the raw MiniLM embedder on the first n distinct prompts, distinct prompts in the demo)."""
    import polars as pl

    from curation.embed import SentenceTransformerEmbedder

    texts = pl.read_parquet(ROOT / "data/evals_prompts.parquet")["text"].drop_nulls().unique(maintain_order=True)
    emb = SentenceTransformerEmbedder("all-MiniLM-L6-v2", max_seq_length=128)
    emb.embed(texts[:64].to_list())  # load and warm up
    sample = texts[:n].to_list()
    t0 = time.perf_counter()
    emb.embed(sample)
    return len(sample) / (time.perf_counter() - t0), texts.len()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minilm-n", type=int, default=2000, help="prompts MiniLM embeds to measure its throughput")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/demo.md")
    args = ap.parse_args()

    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="curation-demo-") as tmp:
        env = {**os.environ, "CURATION_MODEL_CACHE": f"{tmp}/models"}
        build = [CURATE, "build", "examples/quickstart.yaml", "--out", f"{tmp}/out"]
        cold, cold_out = timed(build, env)
        html, _ = timed([CURATE, "report", f"{tmp}/out/instruction-mix-quick", "--html", f"{tmp}/report.html"], env)
        warm, warm_out = timed(build, env)
    rate, distinct = minilm_throughput(args.minilm_n)
    load_after = os.getloadavg()
    full_embed = distinct / rate

    rows = [
        ("quickstart, cold (distils static-minilm, embeds 55k prompts)", cold, stage_line(cold_out)),
        ("curate report --html", html, ""),
        ("quickstart, warm rebuild (every stage reused)", warm, stage_line(warm_out)),
        (f"full MiniLM demo: embedding alone, estimated ({distinct} prompts at {rate:.1f}/s)", full_embed, ""),
    ]
    lines = [
        "# Time to a first result (`make demo`)",
        "",
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC · {platform.node()} · {os.cpu_count()} CPUs · "
        f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} · `{' '.join(sys.argv)}`",
        "",
        "| run | seconds | stages |",
        "|---|---:|---|",
        *[f"| {name} | {sec:.1f} | {st} |" for name, sec, st in rows],
        "",
        f"Cold quickstart plus its HTML report: **{cold + html:.0f} s** (target: ≤ 180 s after set-up). "
        f"The full MiniLM demo's embedding alone is {full_embed / cold:.1f}x the whole cold quickstart; "
        f"a warm rebuild takes {warm / cold:.2f}x of it.",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
