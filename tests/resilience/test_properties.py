"""Property tests (hypothesis) of the rate limiter's and the breaker's invariants."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import CircuitOpen
from bastion.resilience.breaker import BreakerConfig, BreakerState, CircuitBreaker, Verdict
from bastion.resilience.rate_limit import Charge, InProcessLimiter, Limit
from bastion.testing.clock import FakeClock

# No example database: runs stay independent and leave no .hypothesis directory behind.
FAST = settings(max_examples=60, deadline=None, database=None)

gaps = st.lists(st.floats(min_value=0.0, max_value=3.0), min_size=1, max_size=80)
costs = st.integers(min_value=1, max_value=4)


@FAST
@given(
    arrivals=st.lists(st.tuples(st.floats(min_value=0, max_value=3), costs), max_size=80),
    rate=st.integers(min_value=1, max_value=120),
    burst=st.integers(min_value=4, max_value=20),
)
def test_limiter_never_admits_more_than_b_plus_r_delta_in_any_window(
    arrivals: list[tuple[float, int]], rate: int, burst: int
) -> None:
    clock = FakeClock(start=0.0)
    limit = Limit(rate=rate, burst=burst)
    limiter = InProcessLimiter(clock=clock)
    admitted: list[tuple[float, int]] = []
    for gap, cost in arrivals:
        clock.advance(gap)
        if limiter.acquire_now([Charge(key="k", limit=limit, cost=cost)]).allowed:
            admitted.append((clock.monotonic(), cost))

    per_s = rate / 60
    for i, (start, _) in enumerate(admitted):
        total = 0
        for at, cost in admitted[i:]:
            total += cost
            assert total <= burst + per_s * (at - start) + 1e-6


@FAST
@given(
    prior=st.lists(st.tuples(st.floats(min_value=0, max_value=2), costs), max_size=30),
    cost=costs,
)
def test_limiter_retry_after_is_exact(prior: list[tuple[float, int]], cost: int) -> None:
    clock = FakeClock(start=0.0)
    limit = Limit(rate=30, burst=4)
    limiter = InProcessLimiter(clock=clock)
    for gap, c in prior:
        clock.advance(gap)
        limiter.acquire_now([Charge(key="k", limit=limit, cost=c)])
    request = [Charge(key="k", limit=limit, cost=cost)]
    # Drain until refused, then check the promised instant.
    while (decision := limiter.acquire_now(request)).allowed:
        pass

    early = FakeClock(start=clock.monotonic())
    probe = InProcessLimiter(clock=early)
    probe._tats = dict(limiter._tats)
    early.advance(max(0.0, decision.retry_after_s - 1e-6))
    if decision.retry_after_s > 1e-6:
        assert not probe.acquire_now(request).allowed
    clock.advance(decision.retry_after_s)
    assert limiter.acquire_now(request).allowed


@FAST
@given(st.lists(st.text(alphabet="abc", min_size=1, max_size=2), min_size=1, max_size=60))
def test_keys_never_share_quota(keys: list[str]) -> None:
    limiter = InProcessLimiter(clock=FakeClock())
    limit = Limit(rate=1, burst=3)
    used: dict[str, int] = {}
    for key in keys:
        allowed = limiter.acquire_now([Charge(key=key, limit=limit)]).allowed
        assert allowed == (used.get(key, 0) < 3)
        used[key] = used.get(key, 0) + allowed


verdicts = st.sampled_from([Verdict.SUCCESS, Verdict.FAILURE, Verdict.IGNORED])


@FAST
@given(
    calls=st.lists(
        st.tuples(
            verdicts, st.floats(min_value=0, max_value=5), st.floats(min_value=0, max_value=4)
        ),
        max_size=120,
    ),
    minimum=st.integers(min_value=1, max_value=6),
    probes=st.integers(min_value=1, max_value=3),
)
def test_breaker_invariants(
    calls: list[tuple[Verdict, float, float]], minimum: int, probes: int
) -> None:
    clock = FakeClock(start=0.0)
    config = BreakerConfig(
        window_size=6,
        minimum_calls=minimum,
        failure_rate=0.5,
        slow_call_s=3.0,
        open_wait_s=5.0,
        half_open_probes=probes,
    )
    breaker = CircuitBreaker("x", config=config, clock=clock)
    counted_since_close = 0
    for verdict, duration, gap in calls:
        clock.advance(gap)
        before = breaker.state
        if before is BreakerState.CLOSED:
            breaker.check()  # closed never refuses
        else:
            try:
                breaker.check()
            except CircuitOpen:
                # Each probe here reports before the next call: only OPEN refuses.
                assert before is BreakerState.OPEN
                continue
        breaker.record(verdict, duration_s=duration)
        after = breaker.state
        if before is BreakerState.CLOSED:
            counted_since_close += verdict is not Verdict.IGNORED
            if after is BreakerState.OPEN:
                # Only failures or slow calls open it, and never before the minimum.
                assert verdict is not Verdict.IGNORED
                assert counted_since_close >= minimum
                counted_since_close = 0
        if after is BreakerState.CLOSED and before is not BreakerState.CLOSED:
            counted_since_close = 0
        if after is BreakerState.OPEN:
            # It opened just now, for exactly the open wait.
            assert breaker.retry_at == clock.monotonic() + config.open_wait_s


@FAST
@given(st.integers(min_value=1, max_value=5), st.integers(min_value=0, max_value=10))
def test_half_open_never_admits_more_than_its_probes(probes: int, extra: int) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(
        "x",
        config=BreakerConfig(window_size=1, minimum_calls=1, half_open_probes=probes),
        clock=clock,
    )
    breaker.check()
    breaker.record_failure()
    clock.advance(breaker.config.open_wait_s)
    admitted = 0
    for _ in range(probes + extra):
        try:
            breaker.check()
            admitted += 1
        except CircuitOpen:
            pass
    assert admitted == probes
