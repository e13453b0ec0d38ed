"""The `curate` command line itself (no build): version, help, schema, usage errors, env defaults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import curation
import curation.recipe
from flows.cli import main

CURATE = str(Path(sys.executable).with_name("curate"))


def test_version_prints_the_package_version(capsys):
    assert main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out == f"curate {curation.__version__}\n"


@pytest.mark.parametrize("command, example", [
    ("build", "curate build examples/quickstart.yaml"),
    ("report", "curate report out/instruction-mix --html report.html"),
    ("schema", "curate schema > recipe.schema.json"),
])
def test_each_command_help_shows_an_example(capsys, monkeypatch, command, example):
    monkeypatch.setenv("COLUMNS", "120")  # rich wraps help to the terminal width; keep examples on one line
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples:" in out and example in out


def test_top_level_help_lists_every_command_and_an_example(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("build", "report", "schema"):
        assert command in out
    assert "curate build examples/quickstart.yaml" in out


def test_schema_lists_every_selectors_keys_with_defaults(capsys):
    from curation.select.base import Selector

    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == curation.recipe.recipe_json_schema()
    selects = {alt["properties"]["method"]["const"]: alt["properties"] for alt in schema["properties"]["select"]["oneOf"]}
    assert set(selects) == set(Selector.registry)
    for method, key, default in [("quad", "alpha", 1e-4), ("kmq-iterative", "rounds", 3), ("stratified", "min_per_group", 0),
                                 ("group-adaptive", "objective", "maxmin"), ("value-threshold", "drop_fraction", 0.0)]:
        assert selects[method][key]["default"] == default and selects[method][key]["description"], (method, key)


def test_schema_prefers_the_library_recipe_json_schema_when_present(capsys, monkeypatch):
    monkeypatch.setattr(curation.recipe, "recipe_json_schema", lambda: {"properties": {"marker": {}}}, raising=False)
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == {"properties": {"marker": {}}}


@pytest.mark.parametrize("argv, mentions", [
    (["frobnicate"], "No such command 'frobnicate'"),
    ([], "Missing command"),
    (["report", "some/dir", "--format", "xml"], "'xml' is not one of 'table', 'csv', 'json'"),
    (["build", "r.yaml", "--bogus"], "No such option: --bogus"),
    (["build"], "Missing argument 'RECIPE'"),
])
def test_usage_errors_exit_2_with_one_error_line(capsys, argv, mentions):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and mentions in lines[0], captured.err
    assert "--help" in lines[0]  # says where to look


def test_missing_recipe_file_is_one_error_line(capsys, tmp_path):
    assert main(["build", str(tmp_path / "nope.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "nope.yaml" in err and "Traceback" not in err


def test_installed_executable_passes_exit_codes_through():
    ok = subprocess.run([CURATE, "--version"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and ok.stdout.strip() == f"curate {curation.__version__}"
    bad = subprocess.run([CURATE, "frobnicate"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and "Traceback" not in bad.stderr


def test_quiet_defaults_turn_off_prefect_client_telemetry_without_overriding_the_user(monkeypatch, capsys):
    monkeypatch.delenv("DO_NOT_TRACK", raising=False)
    main(["--version"])
    assert os.environ["DO_NOT_TRACK"] == "1"
    monkeypatch.setenv("DO_NOT_TRACK", "0")
    main(["--version"])
    assert os.environ["DO_NOT_TRACK"] == "0"  # setdefault: an explicit choice wins
