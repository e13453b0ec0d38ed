"""Servers the tests run as real processes on loopback: a free port, and a server started in its
own process group, waited for until its health URL answers, and stopped (the whole group)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serving(cmd: list[str], *, env: dict[str, str], health_url: str, log_path: Path, what: str,
            timeout: float = 60.0, every: float = 0.2) -> Iterator[None]:
    """Run ``cmd`` until the block ends; enter once ``health_url`` answers 200 (or fail the test
    with the server's log). The server gets its own session, so stopping it stops its children."""
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(health_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{what} did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(every)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
