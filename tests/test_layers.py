"""The one-way layer contracts (pyproject.toml [tool.importlinter]) hold, and catch a violation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = str(Path(sys.executable).with_name("lint-imports"))


def lint(tree: Path) -> subprocess.CompletedProcess:
    return subprocess.run([LINT, "--config", str(tree / "pyproject.toml"), "--no-cache"], cwd=tree, capture_output=True,
                          text=True, env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"}, timeout=300)


def copy_tree(tmp_path: Path) -> Path:
    for name in ("curation", "connectors", "flows"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_tree_keeps_every_layer_contract(tmp_path):
    proc = lint(copy_tree(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_an_algorithm_importing_a_selector_breaks_the_layers(tmp_path):
    tree = copy_tree(tmp_path)
    base = tree / "curation/embed/base.py"
    base.write_text(base.read_text() + "\nimport curation.select  # noqa: E402,F401  (against the grain)\n")
    proc = lint(tree)
    assert proc.returncode != 0
    assert "curation layers" in proc.stdout and "BROKEN" in proc.stdout
    assert "curation.embed.base -> curation.select" in proc.stdout


def test_the_library_importing_prefect_breaks_the_contract(tmp_path):
    tree = copy_tree(tmp_path)
    stages = tree / "curation/stages.py"
    stages.write_text(stages.read_text() + "\nimport prefect  # noqa: E402,F401\n")
    proc = lint(tree)
    assert proc.returncode != 0 and "curation.stages -> prefect" in proc.stdout
