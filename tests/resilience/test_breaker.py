from __future__ import annotations

import logging

import pytest

from bastion.errors import CircuitOpen, ConfigError
from bastion.resilience.breaker import BreakerBoard, BreakerState, CircuitBreaker
from bastion.settings import BreakerSettings
from bastion.testing.clock import FakeClock

Change = tuple[str, BreakerState, BreakerState]
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def make_breaker(
    clock: FakeClock, changes: list[Change] | None = None, *, threshold: int = 3
) -> CircuitBreaker:
    def on_change(name: str, old: BreakerState, new: BreakerState) -> None:
        if changes is not None:
            changes.append((name, old, new))

    return CircuitBreaker(
        "tool:t", failure_threshold=threshold, cooldown_s=10.0, clock=clock, on_change=on_change
    )


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.check()
        breaker.record_failure()


def test_starts_closed_and_admits() -> None:
    breaker = make_breaker(FakeClock())

    breaker.check()

    assert breaker.state is CLOSED
    assert breaker.name == "tool:t"


def test_opens_at_the_threshold_of_consecutive_failures() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make_breaker(clock, changes)

    fail(breaker, 2)
    assert breaker.state is CLOSED
    assert breaker.failures == 2
    fail(breaker, 1)

    assert breaker.state is OPEN
    assert changes == [("tool:t", CLOSED, OPEN)]


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = make_breaker(FakeClock())

    fail(breaker, 2)
    breaker.check()
    breaker.record_success()
    fail(breaker, 2)

    assert breaker.state is CLOSED
    assert breaker.failures == 2


def test_open_refuses_with_the_time_it_reopens() -> None:
    clock = FakeClock(start=100.0)
    breaker = make_breaker(clock)
    fail(breaker, 3)
    clock.advance(4.0)

    with pytest.raises(CircuitOpen) as info:
        breaker.check()

    assert info.value.name == "tool:t"
    assert info.value.retry_at == 110.0
    assert str(info.value) == "circuit 'tool:t' is open until t=110.000"


def test_reads_half_open_exactly_when_the_cooldown_ends() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 3)

    clock.advance(9.999)
    assert breaker.state is OPEN
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN


def test_half_open_admits_exactly_one_probe_at_a_time() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make_breaker(clock, changes)
    fail(breaker, 3)
    clock.advance(10.0)

    breaker.check()
    with pytest.raises(CircuitOpen) as info:
        breaker.check()

    assert info.value.retry_at == clock.monotonic()
    assert breaker.state is HALF_OPEN
    assert changes == [("tool:t", CLOSED, OPEN), ("tool:t", OPEN, HALF_OPEN)]


def test_probe_success_closes() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make_breaker(clock, changes)
    fail(breaker, 3)
    clock.advance(10.0)

    breaker.check()
    breaker.record_success()

    assert breaker.state is CLOSED
    assert breaker.failures == 0
    breaker.check()
    breaker.check()
    assert [new for _, _, new in changes] == [OPEN, HALF_OPEN, CLOSED]


def test_probe_failure_reopens_for_another_full_cooldown() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make_breaker(clock, changes)
    fail(breaker, 3)
    clock.advance(15.0)

    breaker.check()
    breaker.record_failure()

    assert breaker.state is OPEN
    with pytest.raises(CircuitOpen) as info:
        breaker.check()
    assert info.value.retry_at == clock.monotonic() + 10.0
    clock.advance(9.0)
    assert breaker.state is OPEN
    clock.advance(1.0)
    breaker.check()
    assert [new for _, _, new in changes] == [OPEN, HALF_OPEN, OPEN, HALF_OPEN]


def test_release_frees_the_probe_slot_without_a_verdict() -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)
    fail(breaker, 3)
    clock.advance(10.0)

    breaker.check()
    breaker.release()
    breaker.check()

    assert breaker.state is HALF_OPEN
    with pytest.raises(CircuitOpen):
        breaker.check()


def test_release_while_closed_counts_nothing() -> None:
    breaker = make_breaker(FakeClock())
    fail(breaker, 2)

    breaker.check()
    breaker.release()

    assert breaker.failures == 2
    assert breaker.state is CLOSED


def test_late_results_while_open_change_nothing() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make_breaker(clock, changes)
    fail(breaker, 3)
    clock.advance(5.0)

    breaker.record_failure()
    breaker.record_success()

    assert breaker.state is OPEN
    clock.advance(5.0)
    assert breaker.state is HALF_OPEN
    assert changes == [("tool:t", CLOSED, OPEN)]


def test_threshold_one_opens_on_first_failure() -> None:
    breaker = make_breaker(FakeClock(), threshold=1)

    fail(breaker, 1)

    assert breaker.state is OPEN


def test_failing_on_change_hook_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("metrics down")

    breaker = CircuitBreaker(
        "model:m", failure_threshold=1, cooldown_s=1.0, clock=FakeClock(), on_change=broken
    )

    with caplog.at_level(logging.ERROR, logger="bastion.resilience.breaker"):
        breaker.check()
        breaker.record_failure()

    assert breaker.state is OPEN
    assert "on_change hook of circuit breaker 'model:m' failed" in caplog.text


def test_opening_is_logged_as_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    breaker = make_breaker(clock)

    with caplog.at_level(logging.WARNING, logger="bastion.resilience.breaker"):
        fail(breaker, 3)
        clock.advance(10.0)
        fail(breaker, 1)

    assert "circuit breaker 'tool:t' opened (3 consecutive failures)" in caplog.text
    assert "circuit breaker 'tool:t' opened (its probe call failed)" in caplog.text


@pytest.mark.parametrize(
    ("threshold", "cooldown", "message"),
    [
        (0, 1.0, "failure_threshold must be at least 1"),
        (1, 0.0, "cooldown_s must be positive, got 0.0"),
        (1, float("nan"), "cooldown_s must be positive"),
    ],
)
def test_bad_configuration(threshold: int, cooldown: float, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"breaker 'x': {message}"):
        CircuitBreaker("x", failure_threshold=threshold, cooldown_s=cooldown, clock=FakeClock())


def test_board_creates_breakers_on_first_use_with_the_settings() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    board = BreakerBoard(
        clock=clock,
        settings=BreakerSettings(failure_threshold=2, cooldown_s=5.0),
        on_change=lambda *change: changes.append(change),
    )

    first = board.get("tool:a")
    assert board.get("tool:a") is first
    board.get("model:m")
    fail(first, 2)

    assert board.states() == {"tool:a": OPEN, "model:m": CLOSED}
    assert changes == [("tool:a", CLOSED, OPEN)]
    clock.advance(5.0)
    assert board.states()["tool:a"] is HALF_OPEN


def test_empty_board_has_no_states() -> None:
    assert BreakerBoard(clock=FakeClock(), settings=BreakerSettings()).states() == {}
