"""The work before a build (checks, fingerprints) retries transient source errors with backoff;
a missing input is not retried; the last failure is one line naming the source."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pyarrow as pa
import pytest

from connectors import Connector
from curation.builder import Builder, preflight, with_source_retries
from curation.exceptions import SourceReadError
from curation.recipe import Recipe

CALLS: dict[str, int] = {}


class FlakyConnector(Connector, name="test-flaky"):
    """Fails ``options.failures`` times with a refused connection, then works."""

    def _attempt(self) -> None:
        key = self.source.name
        CALLS[key] = CALLS.get(key, 0) + 1
        if CALLS[key] <= self.source.options["failures"]:
            raise ConnectionRefusedError(f"[Errno 111] connect to db://reader:{self.source.options['pw']}@db failed")

    def units(self) -> list[str]:
        self._attempt()
        return ["t"]

    def fingerprints(self):
        self._attempt()
        return [{"unit": "t", "rows": 1}]

    def _read_unit(self, unit: str) -> Iterator[pa.Table]:
        yield pa.table({"text": ["one"]})


def recipe(name: str, failures: int) -> Recipe:
    return Recipe.model_validate({"name": "r", "select": {"method": "random", "budget": 1}, "embed": {"model": "hashing"},
                                  "sources": [{"name": name, "kind": "test-flaky", "text": "text",
                                               "options": {"failures": failures, "pw": "hunter2"}}]})


def test_a_source_that_fails_twice_passes_preflight_and_fingerprinting_after_backoff(tmp_path):
    start = time.monotonic()
    preflight(recipe("twice", 2))
    assert CALLS["twice"] == 3 and time.monotonic() - start >= 1.5  # waited 0.5 s, then 1 s
    CALLS["twice"] = 0
    assert Builder(recipe("twice", 2)).inputs()[0]["units"] == [{"unit": "t", "rows": 1}]


def test_an_unreachable_source_fails_in_one_line_after_four_attempts_without_its_password():
    with pytest.raises(SourceReadError) as exc:
        preflight(recipe("down", 99))
    assert CALLS["down"] == 4
    msg = str(exc.value)
    assert msg.startswith("checking source 'down' failed after 4 attempts: ConnectionRefusedError")
    assert "hunter2" not in msg and "reader:***@db" in msg and "\n" not in msg


def test_a_missing_input_is_not_retried():
    calls = []

    def missing():
        calls.append(1)
        raise FileNotFoundError("sources[s].path: file 'x.parquet' does not exist")

    with pytest.raises(FileNotFoundError):
        with_source_retries(missing, what="checking source 's'")
    assert calls == [1]
