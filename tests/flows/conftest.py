"""Fixtures for flow tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def prefect_logs_to_real_stderr():
    """Prefect's console handler binds sys.stderr once, and pytest swaps (and closes) it per
    test: send Prefect's logs to the real stderr. What `main` prints is still captured; the
    subprocess test in test_cli_build checks that Prefect's logs carry no traceback."""
    import logging
    import sys

    from prefect.logging.handlers import PrefectConsoleHandler

    loggers = [logging.root] + [lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)]
    for lg in loggers:
        for h in lg.handlers:
            if isinstance(h, PrefectConsoleHandler):
                h.stream = sys.__stderr__  # not setStream: it would flush the closed old stream
                h.console.file = sys.__stderr__
    yield


@pytest.fixture(scope="session")
def curate_part_per_chunk() -> list[str]:
    """The ``curate`` command with every embedded chunk stored as its own cache part
    (``curation.pipeline.PART_SECONDS = 0``). For tests that kill a build once some chunks are
    stored: with the default one-second parts, a few hundred texts can finish embedding before
    a second part is written."""
    import sys

    code = ("import sys; import curation.pipeline as p; p.PART_SECONDS = 0.0; "
            "from flows.cli import main; sys.exit(main(sys.argv[1:]))")
    return [sys.executable, "-c", code]
