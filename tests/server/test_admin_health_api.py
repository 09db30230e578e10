"""Usage, audit (admins), health, readiness and metrics through the real server."""

from __future__ import annotations

from decimal import Decimal

import httpx


def test_usage_is_own_for_users_and_everyones_for_admins(served):
    with served.client("bob") as bob:
        bob.post("/v1/runs", json={"message": "lookup A1", "wait": True})
        own = bob.get("/v1/usage", params={"user_id": "alice", "by": "user"}).json()
        by_model = bob.get("/v1/usage").json()
    with served.client("admin") as admin:
        everyone = admin.get("/v1/usage", params={"by": "user"}).json()
        alice_only = admin.get("/v1/usage", params={"user_id": "alice", "by": "user"}).json()
        bad = admin.get("/v1/usage", params={"by": "planet"})
    assert [r["key"] for r in own["rows"]] == ["bob"]
    assert own["rows"][0]["calls"] >= 1
    assert own["rows"][0]["input_tokens"] > 0
    assert by_model["by"] == "model"
    assert [r["key"] for r in by_model["rows"]] == ["scripted:http"]
    assert Decimal(own["total_cost_usd"]) == sum(Decimal(r["cost_usd"]) for r in own["rows"])
    assert {"bob"} <= {r["key"] for r in everyone["rows"]}
    assert {r["key"] for r in alice_only["rows"]} <= {"alice"}
    assert bad.status_code == 422


def test_usage_since_the_future_is_empty(served):
    with served.client("admin") as admin:
        usage = admin.get("/v1/usage", params={"since": "2999-01-01T00:00:00Z"}).json()
    assert usage == {"by": "model", "rows": [], "total_cost_usd": "0"}


def test_audit_query_and_verify_are_for_admins_only(served):
    with served.client("alice") as alice:
        run_id = alice.post("/v1/runs", json={"message": "lookup A1", "wait": True}).json()[
            "run_id"
        ]
        assert alice.get("/v1/audit").status_code == 403
        forbidden = alice.post("/v1/audit/verify")
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["type"] == "permission_denied"
    with served.client("admin") as admin:
        entries = admin.get("/v1/audit", params={"run_id": run_id}).json()["data"]
        denied = admin.get("/v1/audit", params={"decision": "deny", "limit": 5}).json()["data"]
        verified = admin.post("/v1/audit/verify").json()
    actions = {e["action"] for e in entries}
    assert "authenticate" in actions
    assert all(e["run_id"] == run_id for e in entries)
    assert all(e["decision"] == "deny" for e in denied)
    assert verified["ok"] is True
    assert verified["entries"] > len(entries)
    assert verified["first_bad"] is None


def test_a_failed_authentication_is_audited(served):
    with httpx.Client(base_url=served.url) as anon:
        anon.get("/v1/runs", headers={"Authorization": f"Bearer {served.keys['revoked']}"})
    with served.client("admin") as admin:
        denied = admin.get(
            "/v1/audit", params={"action": "authenticate", "decision": "deny", "limit": 1}
        ).json()["data"]
    assert "revoked" in denied[-1]["reason"]


def test_healthz_and_readyz(served):
    with httpx.Client(base_url=served.url) as client:
        health = client.get("/healthz")
        ready = client.get("/readyz")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"]["database"] == {"ok": True, "detail": "sqlite"}
    assert body["checks"]["model"]["ok"] is True
    assert "redis" not in body["checks"]


def test_metrics_count_runs_steps_tokens_and_breakers(served):
    with served.client("alice") as client:
        client.post("/v1/runs", json={"message": "lookup A1", "wait": True})
        text = httpx.get(f"{served.url}/metrics").text
    assert 'bastion_runs_total{status="completed"}' in text
    assert 'bastion_step_duration_seconds_count{outcome="ok",tool="lookup"}' in text
    assert 'bastion_model_tokens_total{direction="input",model="scripted:http"}' in text
    assert 'bastion_model_cost_usd_total{model="scripted:http"}' in text
    assert 'bastion_breaker_state{breaker="model:scripted:http"} 0.0' in text
    assert "bastion_approvals_waiting 0.0" in text
    assert "bastion_runs_active" in text
    assert 'bastion_http_requests_total{code="201",route="/v1/runs"}' in text


def test_openapi_spec_is_served(served):
    spec = httpx.get(f"{served.url}/openapi.json").json()
    paths = set(spec["paths"])
    assert {"/v1/runs", "/v1/runs/{run_id}", "/v1/runs/{run_id}/events"} <= paths
    assert {"/v1/chat/completions", "/v1/usage", "/v1/audit", "/healthz", "/readyz"} <= paths
    assert "HTTPBearer" in spec["components"]["securitySchemes"]
