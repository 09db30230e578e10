"""The dashboard's session cookie: set by signing in, accepted by the API, cleared on sign-out."""

from __future__ import annotations

import httpx


def test_sign_in_sets_an_httponly_cookie_the_api_accepts_until_sign_out(served):
    with httpx.Client(base_url=served.url) as browser:
        assert browser.get("/v1/runs").status_code == 401
        assert "Sign in" in browser.get("/").text
        signed = browser.post("/ui/session", json={"api_key": served.keys["bob"]})
        assert signed.json() == {"principal": "bob"}
        cookie = signed.headers["set-cookie"].lower()
        assert "httponly" in cookie
        assert "samesite=strict" in cookie
        assert browser.get("/v1/runs").status_code == 200
        page = browser.get("/")
        assert 'signed in as <b id="who">bob</b>' in page.text
        assert browser.get("/ui/fragments/overview").status_code == 200
        browser.post("/ui/session/end")
        assert browser.get("/v1/runs").status_code == 401


def test_signing_in_with_a_bad_key_is_401_and_sets_nothing(served):
    with httpx.Client(base_url=served.url) as browser:
        refused = browser.post("/ui/session", json={"api_key": "bst_nope"})
    assert refused.status_code == 401
    assert "set-cookie" not in refused.headers


def test_dashboard_pages_escape_what_users_typed(served):
    with served.client("alice") as alice:
        run = alice.post("/v1/runs", json={"message": "<script>alert(1)</script>", "wait": True})
        run_id = run.json()["run_id"]
        page = alice.get(f"/runs/{run_id}")
        fragment = alice.get(f"/ui/fragments/runs/{run_id}")
    assert "<script>alert(1)</script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment.text
