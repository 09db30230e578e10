from __future__ import annotations

import math
import random

import pytest

from bastion.resilience.backoff import Backoff


def _backoff(base_s: float = 0.5, max_s: float = 8.0, seed: int = 7) -> Backoff:
    return Backoff(base_s=base_s, max_s=max_s, rng=random.Random(seed))


def test_the_cap_doubles_per_attempt_up_to_max():
    backoff = _backoff(base_s=0.5, max_s=8.0)

    assert [backoff.cap(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 5, 6, 10])
def test_delays_stay_within_zero_and_the_cap_and_spread_across_it(attempt):
    backoff = _backoff()
    cap = backoff.cap(attempt)

    delays = [backoff.delay(attempt) for _ in range(500)]

    assert all(0.0 <= d <= cap for d in delays)
    # Full jitter: the whole range is used, not just values near the cap.
    assert min(delays) < 0.1 * cap
    assert max(delays) > 0.9 * cap


def test_the_same_seed_gives_the_same_delays():
    first, second = _backoff(seed=42), _backoff(seed=42)

    assert [first.delay(n) for n in range(1, 6)] == [second.delay(n) for n in range(1, 6)]


def test_retry_after_is_a_floor():
    backoff = _backoff(base_s=0.5, max_s=8.0)

    delays = [backoff.delay(1, retry_after_s=3.0) for _ in range(100)]

    assert all(d == 3.0 for d in delays)  # the jitter for attempt 1 never exceeds 0.5


def test_retry_after_may_exceed_the_cap():
    assert _backoff(max_s=8.0).delay(6, retry_after_s=30.0) == 30.0


def test_a_small_retry_after_does_not_shorten_the_jitter():
    backoff = _backoff(base_s=10.0, max_s=10.0)

    delays = [backoff.delay(1, retry_after_s=0.01) for _ in range(200)]

    assert all(0.01 <= d <= 10.0 for d in delays)
    assert max(delays) > 5.0


def test_a_zero_base_never_waits():
    assert _backoff(base_s=0.0).delay(5) == 0.0


def test_a_huge_attempt_does_not_overflow():
    backoff = _backoff(base_s=1.0, max_s=60.0)

    assert backoff.cap(10_000) == 60.0
    assert 0.0 <= backoff.delay(10_000) <= 60.0


@pytest.mark.parametrize("attempt", [0, -1])
def test_attempts_count_from_one(attempt):
    with pytest.raises(ValueError, match="attempt counts from 1"):
        _backoff().delay(attempt)


@pytest.mark.parametrize(
    ("base_s", "max_s"), [(-1.0, 8.0), (0.5, -2.0), (math.inf, 8.0), (0.5, math.nan)]
)
def test_bad_bounds_are_refused(base_s, max_s):
    with pytest.raises(ValueError, match="must be a finite number of seconds"):
        Backoff(base_s=base_s, max_s=max_s, rng=random.Random(0))
