"""Ctrl-C and SIGTERM end `curate build` in one line and leave nothing running.

The builds run as a new user runs them: no RAY_ADDRESS, no PREFECT_API_URL, so each starts
its own local Ray (and, with ``--prefect``, Prefect's temporary server); all of it must be gone
when it has exited.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CURATE = str(Path(sys.executable).with_name("curate"))


def live_pids(marker: str) -> set[int]:
    """Live processes whose environment carries ``CURATION_TEST_BUILD=<marker>``: the build and
    everything it started (Ray, Prefect's server and their workers inherit its environment);
    other processes on the machine do not count."""
    tag = f"CURATION_TEST_BUILD={marker}".encode()
    out = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z" and \
                    tag in (entry / "environ").read_bytes().split(b"\0"):
                out.add(int(entry.name))
        except (OSError, IndexError):
            pass
    return out


def interrupt_a_build(tmp_path, send, *flags: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "big", "seed": 1,
        "sources": [{"name": "e", "kind": "files", "path": str(ROOT / "data/evals_prompts.parquet"), "id": "prompt_id",
                     "text": "text", "limit": 3000}],
        "groups": ["task"], "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64}, "cluster": {"k": 8},
        "select": {"method": "random", "budget": 100}, "output": {"root": "out"}}))
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PREFECT_API_URL")}
    env["CURATION_TEST_BUILD"] = marker
    # a terminal's process: SIGINT at its default (a test runner may have inherited it ignored)
    proc = subprocess.Popen([CURATE, "build", "r.yaml", *flags], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while not list((tmp_path / "out/.stages").glob("ingest/*/record.json")):
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended before ingest finished"
        time.sleep(0.2)
    time.sleep(float(os.environ.get("CURATION_TEST_INTERRUPT_AFTER", "3")))  # into the embed stage
    t0 = time.monotonic()
    send(proc)
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the build did not end within 90 s of the signal; its stderr:\n{err[-4000:]}")
    assert time.monotonic() - t0 < 30, err[-3000:]
    for _ in range(50):  # children may take a moment to be reaped by init
        left = sorted(live_pids(marker))
        if not left:
            break
        time.sleep(0.2)
    names = [(Path(f"/proc/{p}/cmdline").read_text().replace("\0", " ")[:80] if Path(f"/proc/{p}").exists() else "")
             for p in left]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), [n for n in names if n]


@pytest.mark.slow
@pytest.mark.parametrize("how", ["ctrl-c to the process group, in process",
                                 "sigterm to the build, as a flow run on a temporary server"])
def test_an_interrupted_build_says_one_line_publishes_nothing_and_leaves_no_process(tmp_path, how):
    send = ((lambda p: os.killpg(p.pid, signal.SIGINT)) if how.startswith("ctrl-c")
            else (lambda p: p.send_signal(signal.SIGTERM)))
    done, left = interrupt_a_build(tmp_path, send, *(["--prefect"] if "flow run" in how else []))
    assert done.returncode == 130
    assert done.stderr.strip().splitlines()[-1] == (
        "interrupted: nothing was published; finished stages are kept, so a rerun resumes")
    assert "Traceback" not in done.stderr
    assert left == []  # no Ray, no Prefect server outlives the build
    assert not (tmp_path / "out/big").exists() or not list((tmp_path / "out/big").glob("v*"))
    assert list((tmp_path / "out/.stages").glob("ingest/*/record.json"))  # kept for the rerun


def marked_by(owner: int) -> list[int]:
    out = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if f"CURATION_BUILD_ID={owner}-".encode() in (entry / "environ").read_bytes():
                out.append(int(entry.name))
        except OSError:
            pass
    return out


@pytest.mark.slow
def test_the_next_build_stops_what_a_sigkilled_build_left_running(tmp_path):
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({
        "name": "killed", "seed": 1,
        "sources": [{"name": "e", "kind": "files", "path": str(ROOT / "data/evals_prompts.parquet"), "id": "prompt_id",
                     "text": "text", "limit": 800}],
        "groups": ["task"], "embed": {"model": "all-MiniLM-L6-v2", "max_seq_length": 64}, "cluster": {"k": 4},
        "select": {"method": "random", "budget": 50}, "output": {"root": "out"}}))
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PREFECT_API_URL")}
    # as a flow run on its own temporary Prefect server: a server in its own session, which a
    # SIGKILLed build cannot stop (a Ray started in process dies with it, or soon after)
    proc = subprocess.Popen([CURATE, "build", "r.yaml", "--prefect"], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 180
    while not list((tmp_path / "out/.stages").glob("ingest/*/record.json")):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    time.sleep(2)
    proc.kill()  # SIGKILL: no clean-up can run
    proc.wait()
    left = marked_by(proc.pid)
    assert left  # Prefect's temporary server (and Ray) outlived the killed build
    rerun = subprocess.run([CURATE, "build", "r.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    # Count what the rerun stopped, not what was alive at the kill: some of Ray's workers notice their
    # raylet is gone and exit on their own in between.
    stopped = re.search(r"stopped (\d+) process\(es\) left running by a killed build", rerun.stderr)
    assert stopped and int(stopped.group(1)) >= 1, rerun.stderr[-3000:]
    assert marked_by(proc.pid) == []
    manifest = __import__("json").loads((tmp_path / rerun.stdout.strip().splitlines()[-1] / "manifest.json").read_text())
    assert manifest["stages"]["ingest"]["reused"] is True  # and it resumed
