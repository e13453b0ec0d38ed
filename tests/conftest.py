"""Shared fixtures: seeds, toy pools, real data samples, and one Ray + one Prefect per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")  # Prefect's client-side telemetry (the CLI sets it too)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from curation.types import Pool  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EVALS = ROOT / "data" / "evals_prompts.parquet"
ADULT = ROOT / "data" / "adult.parquet"


def _seeds_from_env(var: str, default: list[int]) -> list[int]:
    """CURATION_TEST_SEED: unset -> a few fixed seeds; "all" -> 0..99; "40-42" -> a range; "7" -> one."""
    raw = os.environ.get(var)
    if not raw:
        return default
    if raw == "all":
        return list(range(100))
    if "-" in raw:
        a, b = raw.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(raw)]


SEEDS = _seeds_from_env("CURATION_TEST_SEED", [0, 1, 42])


def pytest_report_header(config):
    return f"seeds: {SEEDS} (CURATION_TEST_SEED=all to run 0..99)"


@pytest.fixture(params=SEEDS)
def seed(request) -> int:
    """Tests using this must pass for ANY seed in 0..99."""
    return request.param


@pytest.fixture
def toy_pool() -> Pool:
    """8 points, 2 groups (3 'a', 5 'b'), 2 obvious clusters, alternating labels, data values."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1], [9, 9], [9, 10], [10, 9], [10, 10]], np.float32)
    return Pool(ids=np.arange(8).astype(str), embeddings=X, groups=np.array([0, 0, 0, 1, 1, 1, 1, 1]),
                group_names=("a", "b"), clusters=np.array([0, 0, 0, 0, 1, 1, 1, 1]),
                labels=np.array([0, 1, 0, 1, 0, 1, 0, 1]), texts=np.array([f"text {'x' * i}" for i in range(8)], dtype=object),
                values=np.array([0.3, -0.1, 0.2, 0.5, 0.1, 0.0, 0.4, 0.6]))


@pytest.fixture(scope="session")
def evals() -> pl.DataFrame:
    """The real evals prompts (fetched by `make data`)."""
    if not EVALS.is_file():
        pytest.fail(f"{EVALS} is missing: run `make data` (make test does it)")
    return pl.read_parquet(EVALS)


@pytest.fixture(scope="session")
def evals_sample(evals, tmp_path_factory) -> Path:
    """A few hundred real prompts from a handful of tasks, as Parquet."""
    tasks = ["arabic-exams-qa", "chess", "french-lexicon", "rot13", "polish-lexicon", "japanese_driving_license",
             "korean_spelling"]
    df = evals.filter(pl.col("task").is_in(tasks)).sort("prompt_id")
    df = df.group_by("task", maintain_order=True).head(60)
    path = tmp_path_factory.mktemp("evals") / "sample.parquet"
    df.write_parquet(path)
    return path


@pytest.fixture(scope="session")
def adult_sample(tmp_path_factory) -> Path:
    """4,000 real Adult census rows (fetched by `make data`), every race × sex group present."""
    if not ADULT.is_file():
        pytest.fail(f"{ADULT} is missing: run `make data` (make test does it)")
    df = pl.read_parquet(ADULT).filter(pl.col("split") == "train").sample(4000, seed=0, shuffle=True)
    path = tmp_path_factory.mktemp("adult") / "adult.csv"
    df.write_csv(path)
    return path


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole session (2 CPUs); the address lets subprocesses join it."""
    import ray

    ctx = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    yield ctx.address_info["gcs_address"]
    ray.shutdown()


@pytest.fixture(scope="session")
def prefect_api():
    """One Prefect test server for the whole session; yields its API URL."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield PREFECT_API_URL.value()


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real `prefect server start` on loopback (own home and SQLite database, the scheduler
    looping every 2 s) for tests about schedules and deployments; yields its API URL and stops it."""
    import sys

    from loopback import free_port, serving

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2"}
    env.pop("PREFECT_API_URL", None)
    prefect = str(Path(sys.executable).with_name("prefect"))
    url = f"http://127.0.0.1:{port}/api"
    with serving([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], env=env,
                 health_url=f"{url}/health", log_path=home / "server.log", what="prefect server", timeout=120,
                 every=0.5):
        yield url


from services_postgres import postgres  # noqa: E402,F401  (a real PostgreSQL on loopback, once per session)
from services_s3 import s3_server  # noqa: E402,F401  (moto's S3 server on loopback, once per session)
