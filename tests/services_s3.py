"""A real S3 endpoint for tests: moto's server mode as a separate process on loopback.

``s3_server`` starts ``moto_server`` once per session on a free port, waits until it answers,
yields its endpoint URL (``http://127.0.0.1:<port>``) and stops it (its whole process group) at
the end. Tests talk to it over HTTP like to any S3-compatible store: they set
``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_DEFAULT_REGION`` (moto accepts any) and
create their own bucket (a unique name per test, as the server is shared).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from loopback import free_port, serving

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


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """moto's S3 server in its own process; yields the endpoint URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto = str(Path(sys.executable).with_name("moto_server"))
    with serving([moto, "-H", "127.0.0.1", "-p", str(port)], env={**os.environ, **AWS_ENV},
                 health_url=f"{url}/moto-api/", log_path=tmp_path_factory.mktemp("moto") / "server.log",
                 what="moto_server"):
        yield url
