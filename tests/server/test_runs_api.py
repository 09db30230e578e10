"""The runs API through a real uvicorn server: create, read, list, cancel, stream, auth."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
import pytest
from tests_server_helpers import read_sse  # type: ignore[import-not-found]


def create(client: httpx.Client, message: str, **body: Any) -> httpx.Response:
    return client.post("/v1/runs", json={"message": message, **body})


def test_sync_create_returns_the_finished_run_with_plan_steps_and_events(served):
    with served.client("alice") as client:
        response = create(client, "please lookup A1", wait=True)
    assert response.status_code == 201, response.text
    run = response.json()
    assert run["status"] == "completed"
    assert run["user_id"] == "alice"
    assert run["plan"]["steps"][0]["tool_name"] == "lookup"
    assert run["steps"][0]["status"] == "success"
    assert run["steps"][0]["result"] == {"order_id": "A1", "status": "shipped"}
    assert [e["seq"] for e in run["events"]] == list(range(1, len(run["events"]) + 1))
    assert run["events"][-1]["data"]["status"] == "completed"
    assert response.headers["location"] == f"/v1/runs/{run['run_id']}"
    assert run["model"] == "scripted:http"


def test_async_create_answers_at_once_and_the_run_is_readable(served):
    with served.client("alice") as client:
        response = create(client, "hold on")
        assert response.status_code == 202, response.text
        run_id = response.json()["run_id"]
        got = client.get(f"/v1/runs/{run_id}")
        assert got.status_code == 200
        assert got.json()["terminal"] is False
        client.post(f"/v1/runs/{run_id}/cancel")


def test_sync_create_that_outlasts_its_wait_answers_202(served):
    with served.client("alice") as client:
        response = create(client, "hold please", wait=True, wait_timeout_s=0.2)
        run_id = response.json()["run_id"]
        cancelled = client.post(f"/v1/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert response.json()["terminal"] is False
    assert cancelled.json()["status"] == "cancelled"


def test_cancel_mid_run_stops_the_run_and_a_second_cancel_conflicts(served):
    with served.client("alice") as client:
        run_id = create(client, "hold this").json()["run_id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            for event in read_sse(stream):
                if event["event"] == "step_started":
                    break
        response = client.post(f"/v1/runs/{run_id}/cancel")
        assert response.status_code == 200, response.text
        run = response.json()
        assert run["status"] == "cancelled"
        assert run["events"][-1]["data"] == {
            "status": "cancelled",
            "error": "cancelled by the caller",
        }
        again = client.post(f"/v1/runs/{run_id}/cancel")
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "conflict"
    assert again.json()["error"]["run_id"] == run_id


def test_idempotency_key_returns_the_same_run_on_retry(served):
    headers = {"Idempotency-Key": "order-42"}
    with served.client("alice") as client:
        first = client.post(
            "/v1/runs", json={"message": "lookup A1", "wait": True}, headers=headers
        )
        second = client.post(
            "/v1/runs", json={"message": "lookup A1", "wait": True}, headers=headers
        )
        runs = client.get("/v1/runs", params={"session_id": first.json()["session_id"]}).json()
    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json()["run_id"] == first.json()["run_id"]
    assert len(runs["data"]) == 1


def test_idempotency_key_is_per_principal(served):
    headers = {"Idempotency-Key": "shared-key"}
    body = {"message": "lookup A1", "wait": True}
    with served.client("alice") as alice, served.client("bob") as bob:
        a = alice.post("/v1/runs", json=body, headers=headers).json()
        b = bob.post("/v1/runs", json=body, headers=headers).json()
    assert a["run_id"] != b["run_id"]
    assert (a["user_id"], b["user_id"]) == ("alice", "bob")


def test_idempotency_key_reused_for_another_request_conflicts(served):
    headers = {"Idempotency-Key": "reused"}
    with served.client("alice") as client:
        client.post("/v1/runs", json={"message": "lookup A1", "wait": True}, headers=headers)
        other = client.post("/v1/runs", json={"message": "something else"}, headers=headers)
    assert other.status_code == 409
    assert "Idempotency-Key" in other.json()["error"]["message"]


def test_concurrent_idempotent_creates_start_one_run(served):
    headers = {"Idempotency-Key": "race"}
    results: list[httpx.Response] = []

    def go() -> None:
        with served.client("alice") as client:
            results.append(
                client.post(
                    "/v1/runs", json={"message": "lookup A1", "wait": True}, headers=headers
                )
            )

    threads = [threading.Thread(target=go) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({r.json()["run_id"] for r in results}) == 1
    with served.client("alice") as client:
        run = client.get(f"/v1/runs/{results[0].json()['run_id']}").json()
    assert [e["data"].get("status") for e in run["events"]].count("completed") == 1


def test_list_runs_pages_with_a_cursor_without_gaps_or_repeats(served):
    with served.client("bob") as client:
        made = [
            create(client, f"hello {i}", session_id="paging", wait=True).json() for i in range(5)
        ]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"session_id": "paging", "limit": 2}
            if cursor:
                params["cursor"] = cursor
            page = client.get("/v1/runs", params=params).json()
            seen += [r["run_id"] for r in page["data"]]
            pages += 1
            cursor = page["next_cursor"]
            if cursor is None:
                break
    assert pages == 3
    assert sorted(seen) == sorted(r["run_id"] for r in made)
    assert len(seen) == len(set(seen))


def test_list_runs_filters_by_status(served):
    with served.client("bob") as client:
        create(client, "hello status", session_id="status-filter", wait=True)
        done = client.get(
            "/v1/runs", params={"session_id": "status-filter", "status": "completed"}
        ).json()
        none = client.get(
            "/v1/runs", params={"session_id": "status-filter", "status": "failed"}
        ).json()
    assert [r["status"] for r in done["data"]] == ["completed"]
    assert none["data"] == []


def test_a_bad_cursor_is_a_typed_422(served):
    with served.client("alice") as client:
        response = client.get("/v1/runs", params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_request"


def test_users_see_only_their_own_runs_and_admins_see_all(served):
    with served.client("alice") as alice:
        run_id = create(alice, "hello mine", wait=True).json()["run_id"]
    with served.client("bob") as bob:
        got = bob.get(f"/v1/runs/{run_id}")
        listed = bob.get("/v1/runs", params={"user_id": "alice"}).json()
        cancel = bob.post(f"/v1/runs/{run_id}/cancel")
        events = bob.get(f"/v1/runs/{run_id}/events")
    with served.client("admin") as admin:
        as_admin = admin.get(f"/v1/runs/{run_id}")
        admin_list = admin.get("/v1/runs", params={"user_id": "alice"}).json()
    assert got.status_code == 404
    assert got.json()["error"] == {
        "type": "not_found",
        "message": f"no run {run_id!r}",
        "run_id": run_id,
    }
    assert listed["data"] == []
    assert cancel.status_code == 404
    assert events.status_code == 404
    assert as_admin.status_code == 200
    assert run_id in [r["run_id"] for r in admin_list["data"]]


@pytest.mark.parametrize(
    ("headers", "needle"),
    [
        ({}, "no API key"),
        ({"Authorization": "Basic abc"}, "no API key"),
        ({"Authorization": "Bearer nonsense"}, "malformed"),
        ({"Authorization": "Bearer bst_0123456789ab_" + "A" * 43}, "not recognised"),
    ],
)
def test_requests_without_a_valid_key_are_401(served, headers, needle):
    with httpx.Client(base_url=served.url, headers=headers) as client:
        response = client.get("/v1/runs")
    assert response.status_code == 401
    body = response.json()
    assert body["error"]["type"] == "not_authenticated"
    assert needle in body["error"]["message"]
    assert response.headers["www-authenticate"] == "Bearer"


def test_a_revoked_key_is_401_saying_so(served):
    with served.client("revoked") as client:
        response = create(client, "hello")
    assert response.status_code == 401
    assert "revoked" in response.json()["error"]["message"]


def test_unknown_run_and_unknown_route_are_typed_404s(served):
    with served.client("alice") as client:
        run = client.get("/v1/runs/run_doesnotexist")
        route = client.get("/v1/nothing-here")
        method = client.delete("/v1/runs")
    assert run.status_code == 404
    assert run.json()["error"]["type"] == "not_found"
    assert route.status_code == 404
    assert "no route" in route.json()["error"]["message"]
    assert method.status_code == 405
    assert method.json()["error"]["type"] == "method_not_allowed"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"message": ""},
        {"message": "   "},
        {"message": "\u001f"},  # blank to Python (str.strip), not to the schema's regex: was a 500
        {"message": "hi", "timeout_s": -1},
        {"message": "hi", "max_budget_usd": "-1"},
        {"message": "hi", "surprise": True},
    ],
)
def test_invalid_bodies_are_typed_422s_naming_the_field(served, body):
    with served.client("alice") as client:
        response = client.post("/v1/runs", json=body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["type"] == "invalid_request"
    assert "Traceback" not in error["message"]


def test_sse_delivers_every_event_in_order_and_resumes_from_last_event_id(served):
    with served.client("alice") as client:
        run = create(client, "lookup A1", wait=True).json()
        with client.stream("GET", f"/v1/runs/{run['run_id']}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = list(read_sse(stream))
        assert [int(e["id"]) for e in events] == [e["seq"] for e in run["events"]]
        assert [e["event"] for e in events] == [e["kind"] for e in run["events"]]
        assert json.loads(events[0]["data"])["data"] == {"status": "admitted"}
        middle = events[2]["id"]
        with client.stream(
            "GET", f"/v1/runs/{run['run_id']}/events", headers={"Last-Event-ID": middle}
        ) as stream:
            rest = list(read_sse(stream))
        bad = client.get(f"/v1/runs/{run['run_id']}/events", headers={"Last-Event-ID": "x"})
    assert [e["id"] for e in rest] == [e["id"] for e in events[3:]]
    assert bad.status_code == 422


def test_sse_follows_a_live_run_to_its_end(served):
    with served.client("alice") as client:
        run_id = create(client, "hold live").json()["run_id"]
        seen: list[dict[str, str]] = []
        with client.stream("GET", f"/v1/runs/{run_id}/events") as stream:
            for event in read_sse(stream):
                seen.append(event)
                if event["event"] == "step_started":
                    with served.client("alice") as other:
                        assert other.post(f"/v1/runs/{run_id}/cancel").status_code == 200
        stored = client.get(f"/v1/runs/{run_id}").json()["events"]
    assert [int(e["id"]) for e in seen] == [e["seq"] for e in stored]
    assert json.loads(seen[-1]["data"])["data"]["status"] == "cancelled"


def test_sse_opened_mid_step_gets_the_events_not_yet_stored(served):
    with served.client("alice") as client:
        run_id = create(client, "hold mid-step").json()["run_id"]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as first:
            for event in read_sse(first):
                if event["event"] == "step_started":
                    started = event
                    break
        stored = [e["kind"] for e in client.get(f"/v1/runs/{run_id}").json()["events"]]
        with client.stream("GET", f"/v1/runs/{run_id}/events") as second:
            for event in read_sse(second):
                if event["event"] == "step_started":
                    again = event
                    break
        client.post(f"/v1/runs/{run_id}/cancel")
    assert "step_started" not in stored  # flushed only when the step ends
    assert again == started
