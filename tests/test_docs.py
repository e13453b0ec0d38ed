"""The code cites docs/ (never a file outside the repository), and every citation resolves."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CITATION = re.compile(r"docs/([\w/.-]+\.md)(#[\w-]+)?")


def slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    in_code, out = False, set()
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("#"):
            out.add(slug(line.lstrip("#")))
    return out


def sources() -> list[Path]:
    files = [ROOT / "README.md"]
    for pkg in ("curation", "connectors", "flows", "tests", "bench", "examples"):
        files += [p for p in (ROOT / pkg).rglob("*") if p.suffix in (".py", ".yaml", ".md")]
    return files


def test_every_docs_citation_in_the_code_names_an_existing_page_and_heading():
    cited = 0
    for f in sources():
        for m in CITATION.finditer(f.read_text()):
            page = ROOT / "docs" / m.group(1)
            assert page.is_file(), f"{f.relative_to(ROOT)} cites missing {page.relative_to(ROOT)}"
            if m.group(2):
                assert m.group(2)[1:] in anchors(page), f"{f.relative_to(ROOT)}: no heading {m.group(0)}"
            cited += 1
    assert cited >= 20  # the modules cite their docs


def test_links_between_docs_pages_resolve():
    link = re.compile(r"\]\(([\w/.-]*\.md)?(#[\w-]+)?\)")
    for page in (ROOT / "docs").rglob("*.md"):
        for m in link.finditer(page.read_text()):
            target = (page.parent / m.group(1)).resolve() if m.group(1) else page
            assert target.is_file(), f"{page.relative_to(ROOT)} links to missing {m.group(1)}"
            if m.group(2):
                assert m.group(2)[1:] in anchors(target), f"{page.relative_to(ROOT)}: no heading {m.group(0)}"


def test_every_document_the_code_cites_is_in_the_repository():
    """The project stands on its own: an upper-case Markdown document name or a
    ``../`` path named in code, tests or the README is a file of this repository."""
    cited = re.compile(r"\.\./[\w./-]+|\b[A-Z][A-Z0-9_]*\.md\b")
    repo = {p.name for p in ROOT.rglob("*.md") if ".venv" not in p.parts}
    for f in sources():
        for m in cited.finditer(f.read_text()):
            ref = m.group(0)
            if ref.startswith("../"):
                assert (f.parent / ref).resolve().is_relative_to(ROOT), f"{f.relative_to(ROOT)} points outside: {ref}"
            else:
                assert ref in repo, f"{f.relative_to(ROOT)} cites {ref}, which is not in the repository"
