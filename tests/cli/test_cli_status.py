"""``bastion status``: breaker states from the shared backend, or a plain "no shared state"."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid

import pytest

from bastion.cli.main import main
from bastion.cli.status import NO_SHARED_STATE
from bastion.resilience.breaker import BreakerState
from bastion.resilience.redis_backend import RedisBreakerShare, connect

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("BASTION_RESILIENCE__STATE_URL", raising=False)


def test_without_shared_state_it_says_so_plainly(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status"]) == 0
    assert capsys.readouterr().out.strip() == NO_SHARED_STATE
    assert main(["status", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shared"] is False


def test_a_state_url_that_is_not_redis_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("BASTION_RESILIENCE__STATE_URL", "http://127.0.0.1:1/")

    assert main(["status"]) == 2
    assert "only Redis is supported" in capsys.readouterr().err


def test_redis_down_is_one_line_not_a_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("BASTION_RESILIENCE__STATE_URL", f"redis://127.0.0.1:{port}/0")

    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: could not read breaker state from Redis")
    assert "Traceback" not in err


async def _publish(prefix: str) -> bool:
    client = connect(REDIS_URL)
    try:
        await client.ping()
    except Exception:
        await client.aclose()
        return False
    share = RedisBreakerShare(client, prefix=prefix)
    await share.publish(
        "model:openai:m", BreakerState.OPEN, open_for_s=60, at="2026-01-01T00:00:00"
    )
    await share.publish("tool:lookup", BreakerState.CLOSED, open_for_s=60, at="2026-01-01T00:00:01")
    await client.aclose()
    return True


async def _cleanup(prefix: str) -> None:
    client = connect(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def test_with_redis_it_lists_every_breaker_and_exits_1_when_one_is_open(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = f"bastion-test-{uuid.uuid4().hex[:12]}"
    if not asyncio.run(_publish(prefix)):
        if os.environ.get("BASTION_REQUIRE_REDIS") == "1":
            pytest.fail(f"Redis at {REDIS_URL} is required (BASTION_REQUIRE_REDIS=1)")
        pytest.skip(f"Redis at {REDIS_URL} is unreachable")
    monkeypatch.setenv("BASTION_RESILIENCE__STATE_URL", REDIS_URL)
    monkeypatch.setenv("BASTION_RESILIENCE__KEY_PREFIX", prefix)
    try:
        assert main(["status"]) == 1
        lines = capsys.readouterr().out.splitlines()
        assert main(["status", "--json"]) == 1
        payload = json.loads(capsys.readouterr().out)
    finally:
        asyncio.run(_cleanup(prefix))

    assert lines == [
        "model:openai:m  open       since 2026-01-01T00:00:00",
        "tool:lookup     closed     since 2026-01-01T00:00:01",
    ]
    assert payload["shared"] is True
    assert payload["breakers"]["model:openai:m"]["state"] == "open"
