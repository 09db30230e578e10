from __future__ import annotations

import math

import pytest

from bastion.errors import ConfigError
from bastion.resilience.rate_limit import Charge, Decision, InProcessLimiter, Limit, combine, gcra
from bastion.testing.clock import FakeClock

#: 60 a minute = one a second, bursts of 5.
PER_SECOND = Limit(rate=60, burst=5)


def charge(key: str = "user:a", limit: Limit = PER_SECOND, cost: float = 1) -> Charge:
    return Charge(key=key, limit=limit, cost=cost)


def test_a_fresh_key_admits_exactly_the_burst_at_once() -> None:
    limiter = InProcessLimiter(clock=FakeClock())

    results = [limiter.acquire_now([charge()]).allowed for _ in range(6)]

    assert results == [True] * 5 + [False]


@pytest.mark.parametrize("elapsed", [0.0, 1.0, 2.5, 7.0, 59.9])
def test_admits_exactly_b_plus_r_delta_over_a_window(elapsed: float) -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    admitted = 0
    steps = int(elapsed / 0.1)
    for i in range(steps + 1):
        if i:
            clock.advance(0.1)
        while limiter.acquire_now([charge()]).allowed:
            admitted += 1

    assert admitted == 5 + math.floor(round(steps * 0.1, 9))


def test_retry_after_is_exact_a_retry_then_passes_and_just_before_fails() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    for _ in range(5):
        assert limiter.acquire_now([charge()]).allowed
    clock.advance(0.25)

    refused = limiter.acquire_now([charge()])

    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(0.75, abs=1e-12)
    assert refused.key == "user:a"
    clock.advance(refused.retry_after_s - 1e-6)
    assert not limiter.acquire_now([charge()]).allowed
    clock.advance(1e-6)
    assert limiter.acquire_now([charge()]).allowed


def test_token_costs_are_charged_in_units() -> None:
    clock = FakeClock()
    tokens = Limit(rate=600, burst=100)  # 10 tokens a second
    limiter = InProcessLimiter(clock=clock)

    assert limiter.acquire_now([charge(limit=tokens, cost=80)]).allowed
    refused = limiter.acquire_now([charge(limit=tokens, cost=30)])

    assert not refused.allowed
    assert refused.retry_after_s == pytest.approx(1.0)
    clock.advance(1.0)
    assert limiter.acquire_now([charge(limit=tokens, cost=30)]).allowed


def test_a_cost_above_the_burst_can_never_pass() -> None:
    decision, _ = gcra(None, 0.0, charge(cost=6))

    assert not decision.allowed
    assert decision.retry_after_s == math.inf


def test_one_users_burst_does_not_consume_anothers_quota() -> None:
    limiter = InProcessLimiter(clock=FakeClock())
    while limiter.acquire_now([charge("user:greedy")]).allowed:
        pass

    assert [limiter.acquire_now([charge("user:calm")]).allowed for _ in range(5)] == [True] * 5


def test_several_limits_are_all_or_nothing() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock)
    tight = Limit(rate=60, burst=1)
    assert limiter.acquire_now([charge("app", tight)]).allowed

    refused = limiter.acquire_now([charge("user:a"), charge("app", tight)])

    assert not refused.allowed
    assert refused.key == "app"
    # The user's limit was not charged by the refused request: still a full burst.
    assert [limiter.acquire_now([charge("user:a")]).allowed for _ in range(6)] == [True] * 5 + [
        False
    ]


def test_combine_reports_the_longest_wait() -> None:
    decisions = [
        Decision.admit(),
        Decision(allowed=False, retry_after_s=1.0, key="a"),
        Decision(allowed=False, retry_after_s=3.0, key="b"),
    ]

    assert combine(decisions).key == "b"
    assert combine([Decision.admit()]).allowed


def test_idle_keys_are_pruned_above_the_bound() -> None:
    clock = FakeClock()
    limiter = InProcessLimiter(clock=clock, max_keys=2)
    limiter.acquire_now([charge("a")])
    limiter.acquire_now([charge("b")])
    clock.advance(10.0)  # both idle: their state equals a fresh key's

    limiter.acquire_now([charge("c")])

    assert set(limiter._tats) == {"c"}


async def test_acquire_is_the_async_face_of_acquire_now() -> None:
    limiter = InProcessLimiter(clock=FakeClock())

    assert (await limiter.acquire([charge()])).allowed


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0, "burst": 1}, "rate must be positive"),
        ({"rate": math.inf, "burst": 1}, "rate must be positive"),
        ({"rate": 1, "burst": 0}, "burst must be at least 1"),
        ({"rate": 1, "burst": 1, "period_s": 0}, "period_s must be positive"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Limit(**kwargs)  # type: ignore[arg-type]
