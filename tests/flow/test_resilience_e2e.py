"""End to end: breakers, fallback models, Retry-After and cached tool results, in `AgentSystem`.

The hosted model is the real `openai` SDK over a socket to `FakeOpenAIServer`; time is a
`FakeClock`. Runs are in process (durable off): what is under test is the resilience wiring.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from datetime import timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import TransientToolError
from bastion.messages import AgentRequest, AgentResponse, Principal, RunStatus
from bastion.models.scripted import ScriptedModel
from bastion.router.registry import make_tool
from bastion.settings import load_settings
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock
from bastion.testing.fake_openai import FakeOpenAIServer

ALICE = Principal(id="alice", roles=frozenset({"customer"}), scopes=frozenset({"basic"}))
PLAN = json.dumps(
    {
        "reasoning": "look it up",
        "steps": [
            {
                "description": "Look up order 7",
                "tool_name": "order_status",
                "tool_args": {"order_id": 7},
            }
        ],
    }
)

#: The hosted model's price, so that the cost controller can bound its calls.
PRICES = {"prices": {"openai:gpt-primary": {"input_per_mtok": "0.1", "output_per_mtok": "0.4"}}}

tool_up = {"value": True}


def order_status(order_id: int) -> dict[str, Any]:
    """The status of an order."""
    if not tool_up["value"]:
        raise TransientToolError("the orders service answered 503")
    return {"order_id": order_id, "status": "shipped"}


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture(autouse=True)
def tool_is_up() -> None:
    tool_up["value"] = True


Factory = Callable[..., Any]


@pytest.fixture
def make_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Factory:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)

    @asynccontextmanager
    async def factory(
        base_url: str,
        *,
        fallback_plans: int = 0,
        model: ScriptedModel | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[tuple[AgentSystem, FakeClock]]:
        fallbacks: list[str] = []
        if fallback_plans:
            script = tmp_path / "fallback.json"
            script.write_text(
                json.dumps({"mode": "sequence", "responses": [PLAN] * fallback_plans})
            )
            fallbacks.append(f"scripted:{script}")
        config = load_settings(
            data_dir=tmp_path,
            durable={"enabled": False},
            model={
                "name": "openai:gpt-primary",
                "openai_base_url": base_url,
                "fallbacks": fallbacks,
            },
            cost=PRICES,
            **(settings or {}),
        )
        clock = FakeClock()
        system = AgentSystem.from_settings(
            config,
            tools=[make_tool(order_status)],
            principals=[ALICE],
            model=model,
            clock=clock,
            rng=random.Random(3),
        )
        async with system:
            yield system, clock

    return factory


async def ask(system: AgentSystem, session: str) -> AgentResponse:
    return await system.run(
        AgentRequest(user_id="alice", session_id=session, message="where is order 7?")
    )


async def test_a_primary_returning_503s_opens_its_breaker_and_runs_complete_on_the_fallback(
    fake_openai: FakeOpenAIServer, make_system: Factory
) -> None:
    fake_openai.error(503).error(503)
    breaker = {"window_size": 2, "minimum_calls": 2, "failure_rate": 1.0, "cooldown_s": 60}
    async with make_system(
        fake_openai.base_url, fallback_plans=3, settings={"breaker": breaker}
    ) as (system, _clock):
        responses = [await ask(system, f"s{i}") for i in range(3)]
        states = system.breaker_states()

    assert [r.status for r in responses] == [RunStatus.COMPLETED] * 3, responses[0]
    fallback = responses[0].model
    assert fallback is not None
    assert fallback.startswith("scripted:")
    assert all(r.model == fallback for r in responses)
    assert len(fake_openai.requests) == 2  # the third run never reached the dead primary
    assert states["model:openai:gpt-primary"] == "open"
    assert states[f"provider:{fake_openai.base_url}"] == "open"
    for response in responses:
        assert response.degraded
        assert f"Answered with the fallback model {fallback}" in response.degraded[0]
        assert "openai:gpt-primary" in response.degraded[0]
        assert "Note: Answered with the fallback model" in response.message
    assert "circuit open" in responses[2].degraded[0]


def _http_date_in(clock: FakeClock, seconds: float) -> str:
    return format_datetime(clock.now() + timedelta(seconds=seconds), usegmt=True)


@pytest.mark.parametrize("form", ["retry-after-ms", "retry-after", "http-date"])
async def test_a_429_with_retry_after_2s_is_retried_no_sooner_than_2s_on_the_clock(
    fake_openai: FakeOpenAIServer, make_system: Factory, form: str
) -> None:
    async with make_system(fake_openai.base_url) as (system, clock):
        headers = {
            "retry-after-ms": {"retry-after-ms": "2000"},
            "retry-after": {"retry-after": "2"},
            "http-date": {"retry-after": _http_date_in(clock, 2)},
        }[form]
        fake_openai.error(429, headers=headers).ok(PLAN)
        response = await ask(system, "s1")

    assert response.status is RunStatus.COMPLETED
    assert response.model == "openai:gpt-primary"
    assert len(fake_openai.requests) == 2
    assert len(clock.sleeps) == 1
    assert clock.sleeps[0] >= 2.0
    assert response.degraded == ()


async def test_a_retry_after_beyond_the_deadline_fails_fast_saying_so(
    fake_openai: FakeOpenAIServer, make_system: Factory
) -> None:
    fake_openai.error(429, headers={"retry-after": "30"})
    async with make_system(fake_openai.base_url, settings={"run": {"timeout_s": 10}}) as (
        system,
        clock,
    ):
        response = await ask(system, "s1")

    assert response.status is RunStatus.ABORTED
    assert response.error is not None
    assert "rate limited, retry after 30s" in response.error
    assert "asked us to wait 30 seconds" in response.message
    assert clock.sleeps == []


async def test_a_down_tool_serves_its_cached_result_marked_as_cached(
    fake_openai: FakeOpenAIServer, make_system: Factory
) -> None:
    model = ScriptedModel([PLAN, PLAN], name="scripted:planner")
    settings = {"recovery": {"max_attempts": 1}}
    async with make_system(fake_openai.base_url, model=model, settings=settings) as (
        system,
        clock,
    ):
        fresh = await ask(system, "s1")
        tool_up["value"] = False
        clock.advance(90.0)
        cached = await ask(system, "s2")

    assert fresh.status is RunStatus.COMPLETED
    assert fresh.degraded == ()
    assert cached.status is RunStatus.COMPLETED
    assert cached.plan is not None
    step = cached.plan.steps[0]
    assert step.result == {"order_id": 7, "status": "shipped"}
    assert step.cached_age_s == 90.0
    assert cached.degraded == (
        "The result of 'Look up order 7' is cached from 90 seconds ago: the service behind it "
        "is unavailable.",
    )
    assert "cached from 90 seconds ago" in cached.message


async def test_rate_limits_at_admission_reject_with_the_exact_wait(
    fake_openai: FakeOpenAIServer, make_system: Factory
) -> None:
    model = ScriptedModel([PLAN], name="scripted:planner")
    limits = {"user_requests_per_min": 2, "user_request_burst": 1}
    async with make_system(fake_openai.base_url, model=model, settings={"rate_limit": limits}) as (
        system,
        clock,
    ):
        first = await ask(system, "s1")
        clock.advance(10.0)
        second = await ask(system, "s2")
        limits_seen = system.components.limits
        rejections = system.rate_limit_rejections()

    assert first.status is RunStatus.COMPLETED
    assert second.status is RunStatus.ABORTED
    assert second.error is not None
    assert "retry after 20.000s" in second.error
    assert second.message == "Too many requests right now. Please try again in 20 seconds."
    assert limits_seen is not None
    assert limits_seen.rejections["user"] == 1
    assert rejections == {"user": 1}
