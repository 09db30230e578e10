"""Readiness checks one by one: Redis (real, and unreachable), the model's breaker."""

from __future__ import annotations

import os
import socket
from types import SimpleNamespace
from typing import Any

import pytest

from bastion.server.routes.health import _model, _redis


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_redis_check_passes_on_a_live_redis_and_fails_on_a_closed_port():
    live = await _redis("redis://127.0.0.1:6379/0")
    if not live.ok and os.environ.get("BASTION_REQUIRE_REDIS") != "1":
        pytest.skip(f"no Redis at 127.0.0.1:6379 ({live.detail})")
    dead = await _redis(f"redis://127.0.0.1:{closed_port()}/0")
    assert live.ok, live.detail
    assert not dead.ok
    assert "redis unreachable" in dead.detail


def fake_state(breakers: dict[str, str]) -> Any:
    system = SimpleNamespace(model_name="openai:gpt-4o-mini", breaker_states=lambda: breakers)
    return SimpleNamespace(system=system)


def test_model_check_fails_when_its_breaker_is_open():
    assert _model(fake_state({})).ok
    assert _model(fake_state({"model:openai:gpt-4o-mini": "half_open"})).ok
    opened = _model(fake_state({"model:openai:gpt-4o-mini": "open"}))
    assert not opened.ok
    assert "breaker open" in opened.detail
