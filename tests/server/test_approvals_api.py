"""Approvals over HTTP: a run pauses for a risky call; an approver decides; the run wakes."""

from __future__ import annotations

import json

from tests_server_helpers import read_sse  # type: ignore[import-not-found]


def wait_for_approval(served, run_id: str) -> None:
    with served.client("alice") as client, client.stream("GET", f"/v1/runs/{run_id}/events") as s:
        for event in read_sse(s):
            if json.loads(event["data"])["data"].get("status") == "awaiting_approval":
                return
    raise AssertionError("the run never waited for an approval")


def test_an_approver_approves_and_the_run_completes(served):
    with served.client("alice") as alice:
        run_id = alice.post("/v1/runs", json={"message": "refund big"}).json()["run_id"]
        wait_for_approval(served, run_id)
        mine = alice.get("/v1/approvals", params={"run_id": run_id}).json()["data"]
        assert len(mine) == 1
        approval_id = mine[0]["approval_id"]
        assert mine[0]["tool_name"] == "refund"
        assert "above 100" in mine[0]["reason"]
        own = alice.post(f"/v1/approvals/{approval_id}/approve", json={})
        assert own.status_code == 403
    with served.client("bob") as bob:
        assert bob.get("/v1/approvals", params={"run_id": run_id}).json()["data"] == []
        assert bob.post(f"/v1/approvals/{approval_id}/approve").status_code == 403
    with served.client("admin") as admin:
        assert approval_id in [a["approval_id"] for a in admin.get("/v1/approvals").json()["data"]]
        approved = admin.post(f"/v1/approvals/{approval_id}/approve", json={"note": "ok"})
        again = admin.post(f"/v1/approvals/{approval_id}/approve", json={})
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    assert again.status_code == 409
    with served.client("alice") as alice, alice.stream("GET", f"/v1/runs/{run_id}/events") as s:
        last = list(read_sse(s))[-1]
        run = alice.get(f"/v1/runs/{run_id}").json()
    assert json.loads(last["data"])["data"]["status"] == "completed"
    assert run["steps"][-1]["result"] == {"refunded": 500}


def test_a_denied_approval_does_not_run_the_call(served):
    with served.client("alice") as alice:
        run_id = alice.post("/v1/runs", json={"message": "refund big please"}).json()["run_id"]
    wait_for_approval(served, run_id)
    with served.client("admin") as admin:
        approval_id = admin.get("/v1/approvals", params={"run_id": run_id}).json()["data"][0][
            "approval_id"
        ]
        no_reason = admin.post(f"/v1/approvals/{approval_id}/deny", json={})
        denied = admin.post(f"/v1/approvals/{approval_id}/deny", json={"reason": "too much"})
    assert no_reason.status_code == 422
    assert denied.json()["status"] == "denied"
    with served.client("alice") as alice:
        run = alice.get(f"/v1/runs/{run_id}").json()
    assert all(s["result"] != {"refunded": 500} for s in run["steps"])


def test_an_unknown_approval_is_404(served):
    with served.client("admin") as admin:
        response = admin.post("/v1/approvals/apr_nope/approve", json={})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found"
