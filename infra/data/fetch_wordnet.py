"""Extract the WordNet 3.0 glosses (WordNet licence) to Parquet.

    python infra/data/fetch_wordnet.py [--out data/wordnet_glosses.parquet] [--install]

Reads ``/usr/share/wordnet/data.{noun,verb,adj,adv}`` from the Debian package
``wordnet-base`` (``--install`` runs ``apt-get install -y --no-install-recommends
wordnet-base`` when the files are missing; that needs root). One row per synset:
``synset_id`` (pos + offset), ``pos``, ``lexname`` (one of 45 semantic categories, e.g.
``noun.animal``: the label the Quad benchmark predicts), ``words`` (the synset's lemmas) and
``text`` (the gloss). Idempotent: an existing output is left alone.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

WORDNET = Path("/usr/share/wordnet")
# The standard lexicographer file names; a data line's second field indexes this list.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]


def parse(path: Path) -> list[dict[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("  ") or " | " not in line:  # licence header
            continue
        head, gloss = line.split(" | ", 1)
        f = head.split()
        n_words = int(f[3], 16)
        words = [f[4 + 2 * i].replace("_", " ") for i in range(n_words)]
        rows.append({"synset_id": f"{f[2]}{f[0]}", "pos": f[2], "lexname": LEXNAMES[int(f[1])],
                     "words": ", ".join(words), "text": gloss.strip()})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="data/wordnet_glosses.parquet")
    ap.add_argument("--install", action="store_true", help="apt-get install wordnet-base when missing")
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        print(f"{out} exists; nothing to do")
        return 0
    if not (WORDNET / "data.noun").exists():
        if not args.install or shutil.which("apt-get") is None:
            print("WordNet files not found: run `apt-get install -y --no-install-recommends wordnet-base` "
                  "(or this script with --install)", file=sys.stderr)
            return 1
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "wordnet-base"], check=True)
    rows = [r for pos in ("noun", "verb", "adj", "adv") for r in parse(WORDNET / f"data.{pos}")]
    df = pl.DataFrame(rows).unique("text", keep="first", maintain_order=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    df.write_parquet(tmp)
    tmp.rename(out)
    print(f"{out}: {df.height} glosses in {df['lexname'].n_unique()} categories")
    return 0


if __name__ == "__main__":
    sys.exit(main())
