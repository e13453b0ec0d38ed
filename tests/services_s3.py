"""A real S3 endpoint for tests: moto's server mode as a separate process on loopback.

``s3_server`` starts ``moto_server`` once per session on a free port, waits until it answers,
yields its endpoint URL (``http://127.0.0.1:<port>``) and stops it (its whole process group) at
the end. Tests talk to it over HTTP like to any S3-compatible store: they set
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION`` (moto accepts any) and
create their own bucket (a unique name per test, as the server is shared).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def new_bucket(endpoint: str):
    """``(s3fs filesystem, bucket name)``: a fresh bucket on ``endpoint``, written through a
    filesystem object of its own (not the one fsspec caches for the code under test)."""
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=endpoint, key=AWS_ENV["AWS_ACCESS_KEY_ID"],
                           secret=AWS_ENV["AWS_SECRET_ACCESS_KEY"], skip_instance_cache=True)
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    fs.mkdir(bucket)
    return fs, bucket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server in its own process; yields the endpoint URL."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "server.log"
    moto = str(Path(sys.executable).with_name("moto_server"))
    env = {**os.environ, **AWS_ENV}
    log = open(log_path, "w")
    proc = subprocess.Popen([moto, "-H", "127.0.0.1", "-p", str(port)], env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
