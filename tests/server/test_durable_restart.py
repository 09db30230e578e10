"""A server shutting down leaves durable runs to be recovered, not cancelled.

Its own module: DBOS allows one durable system per process, so no other durable server may be up.
"""

from __future__ import annotations

import httpx
from tests_server_helpers import read_sse  # type: ignore[import-not-found]


def test_a_server_shutting_down_leaves_durable_runs_to_be_recovered(restartable):
    headers = {"Authorization": f"Bearer {restartable.keys['alice']}"}
    with restartable.serve() as url, httpx.Client(base_url=url, headers=headers) as client:
        run_id = client.post("/v1/runs", json={"message": "hold over a restart"}).json()["run_id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            for event in read_sse(stream):
                if event["event"] == "step_started":
                    break
    with restartable.serve() as url, httpx.Client(base_url=url, headers=headers) as client:
        run = client.get(f"/v1/runs/{run_id}").json()
        cancel = client.post(f"/v1/runs/{run_id}/cancel")
    assert run["status"] == "running"
    assert cancel.status_code == 202, cancel.text
    assert all(e["data"].get("status") != "cancelled" for e in run["events"])
