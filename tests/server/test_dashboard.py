"""The dashboard in headless Chromium (Debian's, driven by Playwright; no browser download).

A run started through the API appears live, its approval is granted by clicking, it completes;
screenshots go to ``tests-artifacts/`` (kept by CI as artifacts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("BASTION_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "tests-artifacts"

if shutil.which(CHROMIUM) is None and os.environ.get("BASTION_REQUIRE_BROWSER") == "1":
    # CI installs the browser (make install-chromium as root): there, these tests may not skip.
    pytest.fail(f"BASTION_REQUIRE_BROWSER=1 but there is no Chromium at {CHROMIUM}", pytrace=False)

pytestmark = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None,
    reason=f"no Chromium at {CHROMIUM} (make install-chromium, or set BASTION_CHROMIUM)",
)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def sign_in(page, served, who: str) -> None:
    page.goto(served.url + "/")
    page.fill("#api-key", served.keys[who])
    page.click("button[type=submit]")
    page.wait_for_selector(f"#who:text-is('{who}')")


def test_a_run_appears_live_is_approved_by_click_and_completes(browser, served):
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(60_000)  # a freshly installed browser's first pages are slow (CI)
    sign_in(page, served, "admin")
    with served.client("alice") as alice:
        run_id = alice.post("/v1/runs", json={"message": "refund big from the dashboard"}).json()[
            "run_id"
        ]
    row = f"#runs tr[data-run='{run_id}']"
    page.wait_for_selector(f"{row} .status:text-is('awaiting_approval')")
    approval = page.wait_for_selector(f"#approvals tr:has(a:text-is('{run_id}'))")
    assert "refund of 500 is above 100" in approval.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-awaiting-approval.png"), full_page=True)
    approval.query_selector("button[data-action=approve]").click()
    page.wait_for_selector(f"{row} .status:text-is('completed')")
    page.screenshot(path=str(ARTIFACTS / "dashboard-completed.png"), full_page=True)
    spend = page.inner_text("#spend")
    assert "alice" in spend
    assert "scripted:http" in spend
    assert "model:scripted:http" in page.inner_text("#breakers")

    page.click(f"{row} a")
    page.wait_for_selector("#run-status:text-is('completed')")
    assert "refund" in page.inner_text("#plan")
    steps = page.inner_text("#steps")
    assert "success" in steps
    assert "refunded" in steps
    timeline = page.inner_text("#timeline")
    assert "awaiting_approval" in timeline
    assert "model_call" in timeline
    page.screenshot(path=str(ARTIFACTS / "dashboard-run.png"), full_page=True)
    page.close()


def test_a_run_page_follows_the_run_live_and_cancels_by_click(browser, served):
    with served.client("alice") as alice:
        run_id = alice.post("/v1/runs", json={"message": "hold for the dashboard"}).json()["run_id"]
    page = browser.new_page()
    page.set_default_timeout(20_000)
    sign_in(page, served, "alice")
    page.goto(f"{served.url}/runs/{run_id}")
    page.wait_for_selector("#timeline :text('step_started')")
    page.click("button[data-action=cancel]")
    page.wait_for_selector("#run-status:text-is('cancelled')")
    page.close()


def test_a_bad_key_is_refused_on_the_sign_in_form(browser, served):
    page = browser.new_page()
    page.set_default_timeout(20_000)
    page.goto(served.url + "/")
    page.fill("#api-key", served.keys["revoked"])
    page.click("button[type=submit]")
    page.wait_for_selector("#sign-in-error:has-text('revoked')")
    page.close()


def test_users_see_only_their_own_runs_on_the_dashboard(browser, served):
    with served.client("bob") as bob:
        bob_run = bob.post("/v1/runs", json={"message": "hello from bob", "wait": True}).json()
    page = browser.new_page()
    page.set_default_timeout(20_000)
    sign_in(page, served, "alice")
    assert page.query_selector(f"#runs tr[data-run='{bob_run['run_id']}']") is None
    page.goto(f"{served.url}/runs/{bob_run['run_id']}")
    assert "not_found" in page.content()
    page.close()
