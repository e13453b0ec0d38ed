"""Fetch the OpenAI evals prompts (MIT) and extract them to Parquet.

    python infra/data/fetch_evals.py [--out data/evals_prompts.parquet] [--per-file 200]

Downloads the ``evals==3.0.1.post1`` wheel from the package registry with pip (nothing else
is reached), reads ``evals/registry/data/<task>/*.jsonl`` straight from the zip, keeps the
first ``--per-file`` prompts of each file, and writes one row per prompt:
``prompt_id`` (task/file:line), ``task``, ``lang`` (derived from the task name) and ``text``
(the user turns). Malformed lines are skipped and counted. Idempotent: an existing output is
left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import polars as pl

WHEEL = "evals==3.0.1.post1"
# Task-name words that name a language; everything else is English.
LANGS = {
    "afrikaans": "af", "albanian": "sq", "arabic": "ar", "belarusian": "be", "brazilian": "pt", "bulgarian": "bg",
    "canto": "yue", "chinese": "zh", "croatian": "hr", "dutch": "nl", "finnish": "fi", "french": "fr",
    "german": "de", "greek": "el", "gujarati": "gu", "hebrew": "he", "hindi": "hi", "hungarian": "hu",
    "icelandic": "is", "indonesian": "id", "irish": "ga", "italian": "it", "japanese": "ja", "kanji": "ja",
    "kana": "ja", "korean": "ko", "latin": "la", "lithuanian": "lt", "macedonian": "mk", "mongolian": "mn",
    "nepali": "ne", "norwegian": "no", "persian": "fa", "polish": "pl", "portuguese": "pt", "romanian": "ro",
    "russian": "ru", "ru": "ru", "serbian": "sr", "spanish": "es", "swedish": "sv", "tamil": "ta",
    "thirukkural": "ta", "turkish": "tr", "ukrainian": "uk", "urdu": "ur", "iqbal": "ur", "vietnamese": "vi",
    "belarus": "be", "swahili": "sw", "welsh": "cy", "bengali": "bn", "estonian": "et", "czech": "cs",
}


def language_of(task: str) -> str:
    for word in re.split(r"[-_ ]+", task.lower()):
        if word in LANGS:
            return LANGS[word]
    return "en"


def user_text(d: dict) -> str | None:
    i = d.get("input")
    if isinstance(i, str):
        return i
    if isinstance(i, list):
        parts = [m["content"] for m in i if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)]
        return " ".join(parts) if parts else None
    return None


def extract(wheel: Path, per_file: int) -> tuple[pl.DataFrame, int]:
    rows, bad = [], 0
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if n.startswith("evals/registry/data/") and n.endswith(".jsonl"))
        for name in names:
            task = name.split("/")[3]
            with z.open(name) as f:
                for line_no, raw in enumerate(f):
                    if line_no >= per_file:
                        break
                    try:
                        text = user_text(json.loads(raw))
                    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                        bad += 1
                        continue
                    if text is None:
                        bad += 1
                        continue
                    rel = name.removeprefix("evals/registry/data/")
                    rows.append({"prompt_id": f"{rel}:{line_no}", "task": task, "lang": language_of(task), "text": text})
    return pl.DataFrame(rows), bad


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/evals_prompts.parquet")
    ap.add_argument("--per-file", type=int, default=200)
    ap.add_argument("--cache", default="data/.downloads")
    args = ap.parse_args()
    out = Path(args.out)
    if out.is_file():
        print(f"{out} exists; nothing to do")
        return 0
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("evals-3.0.1.post1-*.whl"))
    if not wheels:
        print(f"downloading {WHEEL} (46 MB) ...", flush=True)
        # uv-made venvs have no pip: borrow the system Python's pip for the download
        python = sys.executable if importlib.util.find_spec("pip") else (shutil.which("python3") or "python3")
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("evals-3.0.1.post1-*.whl"))
    df, bad = extract(wheels[0], args.per_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    df.write_parquet(tmp, compression="zstd")
    tmp.rename(out)
    print(f"wrote {out}: {df.height} prompts in {df['task'].n_unique()} tasks, "
          f"{df['lang'].n_unique()} languages ({bad} malformed lines skipped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
