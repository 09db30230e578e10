from __future__ import annotations

import pytest

from bastion.errors import ConfigError
from bastion.resilience.rate_limit import Charge, InProcessLimiter, Limit
from bastion.resilience.redis_backend import RedisBreakerShare, RedisLimiter
from bastion.resilience.wiring import build_resilience
from bastion.settings import Settings
from bastion.testing.clock import FakeClock


def test_in_process_by_default() -> None:
    kit = build_resilience(Settings(), clock=FakeClock())

    assert isinstance(kit.limits.limiter, InProcessLimiter)
    assert kit.share is None
    assert not kit.board.shared
    assert kit.board.config.minimum_calls == 10


async def test_a_redis_url_shares_limits_and_breakers_without_connecting_yet() -> None:
    settings = Settings(resilience={"state_url": "redis://127.0.0.1:1/0", "key_prefix": "p"})

    kit = build_resilience(settings, clock=FakeClock())

    assert isinstance(kit.limits.limiter, RedisLimiter)
    assert isinstance(kit.share, RedisBreakerShare)
    assert kit.board.shared
    await kit.limits.limiter.aclose()


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "postgresql://x/y", "127.0.0.1:6379"])
def test_only_redis_urls_are_accepted(url: str) -> None:
    with pytest.raises(ConfigError, match="only Redis is supported"):
        build_resilience(Settings(resilience={"state_url": url}), clock=FakeClock())


def test_a_breaker_setting_that_could_never_open_is_refused_at_build() -> None:
    settings = Settings(breaker={"window_size": 5, "minimum_calls": 6})

    with pytest.raises(ConfigError, match="could never open"):
        build_resilience(settings, clock=FakeClock())


async def test_a_charge_above_its_burst_never_reaches_redis() -> None:
    kit = build_resilience(
        Settings(resilience={"state_url": "redis://127.0.0.1:1/0"}), clock=FakeClock()
    )
    limiter = kit.limits.limiter
    assert isinstance(limiter, RedisLimiter)

    decision = await limiter.acquire([Charge(key="k", limit=Limit(rate=1, burst=2), cost=3)])

    assert not decision.allowed
    assert decision.retry_after_s == float("inf")
    assert not limiter.degraded  # Redis (down here) was never asked
    await limiter.aclose()
