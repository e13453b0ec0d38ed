"""A real PostgreSQL server on loopback for the tests of the ``sql`` connector.

``postgres`` (session-scoped) runs Debian's PostgreSQL server binaries (``initdb``, ``pg_ctl``)
in a temporary directory: one cluster on 127.0.0.1 on a free port, host connections
authenticated by password (scram-sha-256), a role ``curator`` that owns a database ``reviews``.
The server is stopped (``pg_ctl stop -m immediate``) and its directory removed when the session
ends, so nothing is left running. The server refuses to run as root, so under root it runs as
the ``postgres`` system user, which the Debian package creates.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loopback import free_port

PASSWORD = "pg-Pw9-curator-x7"  # the test role's password: tests assert it never leaks


def _bin_dir() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: the newest /usr/lib/postgresql/<v>/bin, or PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


@dataclass
class Postgres:
    """A running test server: where it listens, the test role and database, and SQL helpers."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    socket_dir: str

    def url(self, password: str = "${REVIEWS_DB_PASSWORD}", *, port: int | None = None) -> str:
        """A recipe URL for the test database (the password a placeholder by default)."""
        return f"postgresql://{self.user}:{password}@{self.host}:{port or self.port}/{self.dbname}"

    def run(self, sql: str, params: Sequence[Any] | None = None, *, many: Sequence[Sequence[Any]] | None = None
            ) -> list[tuple]:
        """Run one statement as the test role over TCP (committed); returns its rows, if any."""
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                             dbname=self.dbname, connect_timeout=10) as conn, conn.cursor() as cur:
            if many is not None:
                cur.executemany(sql, many)
            else:
                cur.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def admin(self, sql: str, *, dbname: str = "postgres") -> None:
        """Run one statement as the superuser over the server's Unix socket (autocommit)."""
        import psycopg

        with psycopg.connect(host=self.socket_dir, port=self.port, user="postgres", dbname=dbname,
                             autocommit=True) as conn:
            conn.execute(sql)


def _as_server_user(cmd: list[str]) -> list[str]:
    """``cmd`` run as the ``postgres`` user when we are root (the server refuses root)."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A real PostgreSQL server on 127.0.0.1 for the session; see the module docstring."""
    bindir = _bin_dir()
    if bindir is None:
        pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: run `make test`, which installs them")
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("no `postgres` system user to run the test server as: run `make test`, which installs it")
    root = Path(tempfile.mkdtemp(prefix="curation-pg-"))
    data, sock, log = root / "data", root / "sock", root / "server.log"
    sock.mkdir()
    if os.geteuid() == 0:
        for p in (root, sock):
            os.chown(p, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(cmd: list[str], what: str) -> None:
        proc = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            server_log = log.read_text()[-2000:] if log.exists() else ""
            pytest.fail(f"PostgreSQL {what} failed: {proc.stderr.strip()[-2000:]}\n{server_log}")

    started = False
    try:
        # --no-sync and fsync=off: a throwaway cluster needs no durability, and starts in ~1 s
        run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8", "--locale=C", "--no-sync",
             "--auth-local=trust", "--auth-host=scram-sha-256"], "initdb")
        options = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={sock} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off")
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            "start")
        started = True
        pg = Postgres(host="127.0.0.1", port=port, user="curator", password=PASSWORD, dbname="reviews",
                      socket_dir=str(sock))
        pg.admin(f"CREATE ROLE curator LOGIN PASSWORD '{PASSWORD}'")
        pg.admin("CREATE DATABASE reviews OWNER curator")
        yield pg
    finally:
        if started:
            subprocess.run(_as_server_user([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                           capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)
