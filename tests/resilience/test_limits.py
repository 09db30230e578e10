from __future__ import annotations

import math

import pytest

from bastion.errors import RateLimited
from bastion.resilience.limits import Limits, rate_limited
from bastion.resilience.rate_limit import Decision, InProcessLimiter
from bastion.settings import RateLimitSettings
from bastion.testing.clock import FakeClock


def make(clock: FakeClock, **settings: object) -> Limits:
    return Limits(
        limiter=InProcessLimiter(clock=clock),
        settings=RateLimitSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
    )


async def test_no_limits_configured_admits_everything() -> None:
    limits = make(FakeClock())

    for _ in range(1000):
        await limits.admit("u", tokens=10**9)
    assert (await limits.before_model_call("p", tokens=10**9)).allowed
    assert limits.admission_charges("u", 5) == []


async def test_reject_mode_raises_with_the_exact_retry_after() -> None:
    clock = FakeClock()
    limits = make(clock, user_requests_per_min=6, user_request_burst=2)  # one per 10 s
    await limits.admit("u", tokens=1)
    await limits.admit("u", tokens=1)
    clock.advance(4.0)

    with pytest.raises(RateLimited) as info:
        await limits.admit("u", tokens=1)

    assert info.value.retry_after_s == pytest.approx(6.0)
    assert "user:u:req" in str(info.value)
    assert info.value.user_message.endswith("try again in 6 seconds.")
    assert limits.rejections["user"] == 1
    assert clock.sleeps == []
    clock.advance(6.0)
    await limits.admit("u", tokens=1)


async def test_one_users_burst_leaves_another_user_alone_but_the_app_limit_is_shared() -> None:
    clock = FakeClock()
    limits = make(
        clock,
        user_requests_per_min=1,
        user_request_burst=2,
        app_requests_per_min=1,
        app_request_burst=3,
    )
    await limits.admit("greedy", tokens=1)
    await limits.admit("greedy", tokens=1)
    with pytest.raises(RateLimited, match="user:greedy:req"):
        await limits.admit("greedy", tokens=1)

    await limits.admit("calm", tokens=1)  # the app's third, the calm user's first
    with pytest.raises(RateLimited, match="app:default:req"):
        await limits.admit("calm", tokens=1)


async def test_tokens_per_minute_are_charged_at_admission() -> None:
    clock = FakeClock()
    limits = make(clock, user_tokens_per_min=600, user_token_burst=1000)
    await limits.admit("u", tokens=900)

    with pytest.raises(RateLimited) as info:
        await limits.admit("u", tokens=200)

    assert info.value.retry_after_s == pytest.approx(10.0)


async def test_queue_mode_waits_the_exact_time_then_admits() -> None:
    clock = FakeClock()
    limits = make(
        clock, mode="queue", max_queue_s=5.0, user_requests_per_min=60, user_request_burst=1
    )
    await limits.admit("u", tokens=1)

    await limits.admit("u", tokens=1)

    assert clock.sleeps == [pytest.approx(1.0)]
    assert limits.rejections == {}


async def test_queue_mode_rejects_a_wait_longer_than_allowed_or_than_the_time_left() -> None:
    clock = FakeClock()
    limits = make(
        clock, mode="queue", max_queue_s=5.0, user_requests_per_min=6, user_request_burst=1
    )
    await limits.admit("u", tokens=1)

    with pytest.raises(RateLimited):  # 10 s > 5 s of queue
        await limits.admit("u", tokens=1)
    clock.advance(7.0)
    with pytest.raises(RateLimited):  # 3 s would do, but only 2 s are left
        await limits.admit("u", tokens=1, time_left_s=2.0)
    assert clock.sleeps == []


async def test_provider_limits_count_requests_and_tokens() -> None:
    clock = FakeClock()
    limits = make(
        clock,
        provider_requests_per_min=60,
        provider_request_burst=5,
        provider_tokens_per_min=60,
        provider_token_burst=100,
    )

    assert (await limits.before_model_call("http://p/v1", tokens=100)).allowed
    refused = await limits.before_model_call("http://p/v1", tokens=10)

    assert not refused.allowed
    assert refused.key == "provider:http://p/v1:tok"
    assert refused.retry_after_s == pytest.approx(10.0)
    assert limits.rejections["provider"] == 1


def test_a_request_that_can_never_pass_says_so() -> None:
    error = rate_limited(Decision(allowed=False, retry_after_s=math.inf, key="user:u:tok"))

    assert error.retry_after_s is None
    assert "can never pass" in str(error)
