"""The Prefect API a `curate build` talks to: ``PREFECT_API_URL`` when it names a server, else a
temporary one for this build only.

Prefect starts such a server itself on a flow's first API call, but only after importing its
whole server application into the calling process (3 s here) and then waiting for the child to
boot (4 s), one after the other. :func:`prefect_api` starts the same server (the command and
settings Prefect's ``SubprocessASGIServer`` uses) as soon as the build knows it needs one, lets
the caller import the flow while it boots, and waits only at the first call: on a 2-core machine
a cached rebuild's fixed cost drops from about 11 s to about 5 s (bench/scale.py measures it).

The server runs in its own session: Ctrl-C in a terminal signals the foreground process group,
and a server that stopped on SIGINT would leave the interrupted flow waiting to report its
crash. The build stops it (at the end, or :func:`stop_all` when interrupted).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from curation.exceptions import CurationError

_RUNNING: list[TemporaryServer] = []
EXIT_PORT_IN_USE = 3  # uvicorn's exit code when it cannot bind


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryServer:
    """Prefect's API server (no UI, no background services) on a free loopback port."""

    def __init__(self) -> None:
        self.process: subprocess.Popen | None = None
        self.port = 0

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self) -> None:
        """Launch the server process and return at once (:meth:`wait` waits for it)."""
        self.port = _free_port()
        prefect_dir = Path(importlib.util.find_spec("prefect").origin).parent  # without importing Prefect
        # no telemetry from a server that lives for one build, whoever starts it (the CLI also
        # sets this for itself; a bench or a test importing this module may not)
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
               "PREFECT__SERVER_FINAL": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
        env.pop("PREFECT_API_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(prefect_dir.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, start_new_session=True)
        _RUNNING.append(self)

    def wait(self, timeout: float = 60.0) -> None:
        """Return once the server answers its health check; one line if it cannot start."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            code = self.process.poll() if self.process is not None else None
            if code == EXIT_PORT_IN_USE:  # another process took the port meanwhile: another port
                self.stop()
                self.start()
            elif code is not None or time.monotonic() > deadline:
                self.stop()
                raise CurationError(f"Prefect's temporary API server did not start (exit code {code}); "
                                    "set PREFECT_API_URL to a running server (`prefect server start`)")
            time.sleep(0.05)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (uvicorn finishes its requests), SIGKILL after ``timeout`` seconds."""
        if self in _RUNNING:
            _RUNNING.remove(self)
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def stop_all() -> None:
    """Stop every temporary server this process started (an interrupted build)."""
    for server in list(_RUNNING):
        server.stop()


@contextmanager
def prefect_api(*, while_starting=None) -> Iterator[str | None]:
    """Within the block, Prefect talks to ``PREFECT_API_URL`` or to a temporary server started
    here and stopped when the block ends; yields that server's API URL (None for a configured
    one). ``while_starting()`` runs while the server boots (e.g. importing the flow)."""
    if os.environ.get("PREFECT_API_URL"):
        if while_starting is not None:
            while_starting()
        yield None
        return
    server = TemporaryServer()
    server.start()
    try:
        if while_starting is not None:
            while_starting()
        from prefect.settings import PREFECT_API_URL, temporary_settings

        server.wait()
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield server.api_url
            finally:
                drain_prefect()
    finally:
        server.stop()


def drain_prefect() -> None:
    """Send the logs and events Prefect still holds while its server is up (its own exit hook
    would find the server gone and print an error instead)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        worker.drain_all(timeout=10)
