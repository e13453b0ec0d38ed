"""The temporary Prefect API a `curate build` starts when PREFECT_API_URL names none: a real
server process that serves the flow run, receives its logs, and is gone when the block ends."""

from __future__ import annotations

import urllib.request

from prefect import flow, get_run_logger

from flows.prefect_server import _RUNNING, prefect_api


@flow(name="hello")
def hello() -> int:
    get_run_logger().info("hello from the flow")
    return 7


def test_a_temporary_server_serves_the_flow_keeps_its_logs_and_stops(monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    imported = []
    with prefect_api(while_starting=lambda: imported.append(len(_RUNNING))) as url:
        process = _RUNNING[0].process
        assert imported == [1]  # the caller's work ran while the server was starting
        state = hello(return_state=True)
        assert state.result() == 7
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            assert r.status == 200
        from flows.prefect_server import drain_prefect

        drain_prefect()  # what leaving the block does: the run's logs reach the server first
        with get_client(sync_client=True) as client:
            assert client.api_url.port == int(url.rsplit(":", 1)[1].split("/")[0])
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
        assert "hello from the flow" in [log.message for log in logs]
    assert process.poll() is not None and _RUNNING == []  # stopped, nothing left running


def test_a_configured_api_url_starts_nothing(monkeypatch):
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:1/api")
    with prefect_api(while_starting=lambda: None) as url:
        assert url is None and _RUNNING == []
