"""The API with durable execution on: runs are DBOS workflows; the same routes behave the same."""

from __future__ import annotations

import json

from tests_server_helpers import read_sse  # type: ignore[import-not-found]


def test_a_durable_run_completes_streams_and_is_idempotent(durable):
    headers = {"Idempotency-Key": "durable-1"}
    body = {"message": "lookup A1", "wait": True}
    with durable.client("alice") as client:
        first = client.post("/v1/runs", json=body, headers=headers)
        again = client.post("/v1/runs", json=body, headers=headers)
        run_id = first.json()["run_id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            events = list(read_sse(stream))
    assert first.status_code == 201, first.text
    assert first.json()["status"] == "completed"
    assert again.status_code == 200
    assert again.json()["run_id"] == run_id
    assert [int(e["id"]) for e in events] == [e["seq"] for e in first.json()["events"]]


def test_a_durable_run_is_cancelled_mid_step(durable):
    with durable.client("alice") as client:
        run_id = client.post("/v1/runs", json={"message": "hold durable"}).json()["run_id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            for event in read_sse(stream):
                if event["event"] == "step_started":
                    break
        cancelled = client.post(f"/v1/runs/{run_id}/cancel")
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            last = list(read_sse(stream))[-1]
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert json.loads(last["data"])["data"]["status"] == "cancelled"
