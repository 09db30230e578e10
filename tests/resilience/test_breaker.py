from __future__ import annotations

import logging

import pytest

from bastion.errors import CircuitOpen, ConfigError
from bastion.resilience.breaker import (
    BreakerBoard,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    Verdict,
    config_from_settings,
)
from bastion.settings import BreakerSettings
from bastion.testing.clock import FakeClock

Change = tuple[str, BreakerState, BreakerState]
CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN
S, F, IGN = Verdict.SUCCESS, Verdict.FAILURE, Verdict.IGNORED


def make(clock: FakeClock, changes: list[Change] | None = None, **config: object) -> CircuitBreaker:
    def on_change(name: str, old: BreakerState, new: BreakerState) -> None:
        if changes is not None:
            changes.append((name, old, new))

    defaults: dict[str, object] = {
        "window_size": 4,
        "minimum_calls": 4,
        "failure_rate": 0.5,
        "slow_call_rate": 0.75,
        "slow_call_s": 2.0,
        "open_wait_s": 10.0,
        "half_open_probes": 2,
    }
    defaults.update(config)
    return CircuitBreaker(
        "tool:t",
        config=BreakerConfig(**defaults),  # type: ignore[arg-type]
        clock=clock,
        on_change=on_change,
    )


def call(breaker: CircuitBreaker, verdict: Verdict, duration_s: float = 0.0) -> None:
    breaker.check()
    breaker.record(verdict, duration_s=duration_s)


def test_exact_state_sequence_under_a_scripted_mix() -> None:
    clock = FakeClock()
    changes: list[Change] = []
    breaker = make(clock, changes)
    seen: list[BreakerState] = []

    # (verdict, duration, seconds to wait before the call)
    script: list[tuple[Verdict, float, float]] = [
        (S, 0.1, 0),
        (IGN, 0.1, 0),  # a 400: counts nothing
        (F, 0.1, 0),
        (IGN, 0.1, 0),
        (S, 0.1, 0),  # window S F S: 3 calls, below the minimum of 4
        (F, 0.1, 0),  # S F S F: 2 of 4 failed = 50% -> open
    ]
    for verdict, duration, wait in script:
        clock.advance(wait)
        call(breaker, verdict, duration)
        seen.append(breaker.state)
    assert seen == [CLOSED, CLOSED, CLOSED, CLOSED, CLOSED, OPEN]

    clock.advance(9.999)
    with pytest.raises(CircuitOpen):
        breaker.check()
    clock.advance(0.001)
    assert breaker.state is HALF_OPEN
    call(breaker, S, 0.1)
    assert breaker.state is HALF_OPEN  # one of two probes in
    call(breaker, S, 5.0)  # slow, but 1 of 2 probes slow < 75%
    assert breaker.state is CLOSED
    assert breaker.window_calls == 0  # a fresh window after closing

    # Slow calls: 3 of 4 at >= 2 s = 75% -> open, though none failed.
    for duration in (2.0, 0.1, 2.5, 3.0):
        call(breaker, S, duration)
    assert breaker.state is OPEN
    clock.advance(10.0)
    call(breaker, F)
    call(breaker, S)  # 1 of 2 probes failed = 50% -> open again
    assert breaker.state is OPEN
    assert changes == [
        ("tool:t", CLOSED, OPEN),
        ("tool:t", OPEN, HALF_OPEN),
        ("tool:t", HALF_OPEN, CLOSED),
        ("tool:t", CLOSED, OPEN),
        ("tool:t", OPEN, HALF_OPEN),
        ("tool:t", HALF_OPEN, OPEN),
    ]


def test_ignored_errors_never_open_it() -> None:
    breaker = make(FakeClock(), window_size=2, minimum_calls=1)

    for _ in range(50):
        call(breaker, IGN)

    assert breaker.state is CLOSED
    assert breaker.window_calls == 0


def test_no_rate_counts_below_the_minimum_calls() -> None:
    breaker = make(FakeClock(), window_size=10, minimum_calls=5)

    for _ in range(4):
        call(breaker, F)
    assert breaker.state is CLOSED
    call(breaker, F)

    assert breaker.state is OPEN


def test_count_window_forgets_the_oldest_calls() -> None:
    breaker = make(FakeClock(), window_size=4, minimum_calls=4, failure_rate=0.75)

    for verdict in (F, F, S, S, S, F, F):  # last four: S S F F = 50% < 75%
        call(breaker, verdict)

    assert breaker.state is CLOSED
    call(breaker, F)  # S F F F = 75%
    assert breaker.state is OPEN


def test_time_window_forgets_calls_older_than_its_seconds() -> None:
    clock = FakeClock(start=100.0)
    breaker = make(clock, window="time", window_size=10, minimum_calls=3, failure_rate=1.0)

    call(breaker, F)
    call(breaker, F)
    clock.advance(10.0)  # both fall out of the window
    call(breaker, F)
    assert breaker.window_calls == 1
    assert breaker.state is CLOSED
    clock.advance(9.0)
    call(breaker, F)
    call(breaker, F)

    assert breaker.state is OPEN


def test_half_open_admits_exactly_the_probe_count_and_refuses_the_rest() -> None:
    clock = FakeClock()
    breaker = make(clock, window_size=1, minimum_calls=1, half_open_probes=3)
    call(breaker, F)
    clock.advance(10.0)

    for _ in range(3):
        breaker.check()
    with pytest.raises(CircuitOpen) as info:
        breaker.check()
    assert info.value.retry_at == clock.monotonic()

    breaker.record_success()
    with pytest.raises(CircuitOpen):  # a finished probe does not free a slot for a fourth
        breaker.check()
    breaker.release()  # a probe ended without verdict: its slot is free again
    breaker.check()
    breaker.record_success()
    breaker.record_success()
    assert breaker.state is CLOSED


def test_open_refuses_with_the_time_it_admits_probes() -> None:
    clock = FakeClock(start=100.0)
    breaker = make(clock, window_size=1, minimum_calls=1)
    call(breaker, F)
    clock.advance(4.0)

    with pytest.raises(CircuitOpen) as info:
        breaker.check()

    assert info.value.retry_at == 110.0
    assert breaker.retry_at == 110.0


def test_late_results_while_open_change_nothing() -> None:
    clock = FakeClock()
    breaker = make(clock, window_size=1, minimum_calls=1)
    breaker.check()  # admitted while closed
    call(breaker, F)  # opens
    clock.advance(5.0)

    breaker.record_failure()  # the first call ends late
    breaker.record_success()

    assert breaker.state is OPEN
    assert breaker.retry_at == clock.monotonic() + 5.0


def test_consecutive_config_is_the_seed_breaker() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker("m", config=BreakerConfig.consecutive(3, open_wait_s=1.0), clock=clock)

    for verdict in (F, F, S, F, F):
        call(breaker, verdict)
    assert breaker.state is CLOSED
    call(breaker, F)

    assert breaker.state is OPEN
    assert breaker.config.half_open_probes == 1


def test_a_failing_on_change_hook_is_logged_and_changes_nothing(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("dashboard down")

    breaker = CircuitBreaker(
        "model:m",
        config=BreakerConfig.consecutive(1, open_wait_s=1.0),
        clock=FakeClock(),
        on_change=broken,
    )
    with caplog.at_level(logging.ERROR):
        call(breaker, F)

    assert breaker.state is OPEN
    assert "on_change hook of circuit breaker 'model:m' failed" in caplog.text


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"window_size": 0}, "window_size must be at least 1"),
        ({"minimum_calls": 0}, "minimum_calls must be at least 1"),
        ({"window_size": 5, "minimum_calls": 6}, "cannot exceed a count window's size"),
        ({"failure_rate": 0.0}, "failure_rate must be in (0, 1]"),
        ({"failure_rate": 1.5}, "failure_rate must be in (0, 1]"),
        ({"slow_call_rate": 0.0}, "slow_call_rate must be in (0, 1]"),
        ({"slow_call_s": 0.0}, "slow_call_s must be positive"),
        ({"open_wait_s": 0.0}, "open_wait_s must be positive"),
        ({"open_wait_s": float("nan")}, "open_wait_s must be positive"),
        ({"half_open_probes": 0}, "half_open_probes must be at least 1"),
    ],
)
def test_bad_config_is_refused_naming_the_field(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**config)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_consecutive_needs_one_failure_at_least() -> None:
    with pytest.raises(ConfigError, match="failures must be at least 1"):
        BreakerConfig.consecutive(0, open_wait_s=1.0)


def test_time_window_may_need_more_calls_than_its_seconds() -> None:
    assert BreakerConfig(window="time", window_size=1, minimum_calls=50).minimum_calls == 50


def test_settings_map_onto_the_config() -> None:
    config = config_from_settings(
        BreakerSettings(window="time", window_size=30, minimum_calls=5, cooldown_s=7.0)
    )

    assert (config.window, config.window_size, config.minimum_calls) == ("time", 30, 5)
    assert config.open_wait_s == 7.0


class FakeShare:
    def __init__(self, open_for: float | None = None) -> None:
        self.open = open_for
        self.published: list[tuple[str, BreakerState, float]] = []

    async def open_for(self, name: str) -> float | None:
        return self.open

    async def publish(self, name: str, state: BreakerState, *, open_for_s: float, at: str) -> None:
        self.published.append((name, state, open_for_s))


async def test_board_sends_each_change_to_sink_and_share_once() -> None:
    clock = FakeClock()
    events: list[BreakerEvent] = []

    async def sink(event: BreakerEvent) -> None:
        events.append(event)

    share = FakeShare()
    board = BreakerBoard(
        clock=clock, config=BreakerConfig.consecutive(1, open_wait_s=5.0), sink=sink, share=share
    )
    breaker = await board.sync("tool:a")
    call(breaker, F)
    await board.flush()
    await board.flush()

    assert [(e.name, e.old, e.new) for e in events] == [("tool:a", CLOSED, OPEN)]
    assert events[0].at == clock.now()
    assert share.published == [("tool:a", OPEN, 5.0)]
    assert board.shared


async def test_board_adopts_an_opening_shared_by_another_worker_without_republishing() -> None:
    clock = FakeClock()
    share = FakeShare(open_for=3.0)
    board = BreakerBoard(clock=clock, config=BreakerConfig(), share=share)

    breaker = await board.sync("model:m")

    assert breaker.state is OPEN
    assert breaker.retry_at == clock.monotonic() + 3.0
    await board.flush()
    assert share.published == []
    share.open = None
    clock.advance(3.0)
    assert (await board.sync("model:m")).state is HALF_OPEN


async def test_a_failing_sink_is_logged_and_the_call_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def sink(event: BreakerEvent) -> None:
        raise RuntimeError("audit down")

    board = BreakerBoard(
        clock=FakeClock(), config=BreakerConfig.consecutive(1, open_wait_s=1.0), sink=sink
    )
    call(board.get("tool:x"), F)
    with caplog.at_level(logging.ERROR):
        await board.flush()

    assert "could not record the state change of breaker 'tool:x'" in caplog.text
    assert board.states() == {"tool:x": OPEN}


def test_board_makes_one_breaker_per_name_in_creation_order() -> None:
    board = BreakerBoard(clock=FakeClock(), config=BreakerConfig())

    assert board.get("b") is board.get("b")
    board.get("a")

    assert list(board.states()) == ["b", "a"]
    assert not board.shared
    assert BreakerBoard(clock=FakeClock(), config=BreakerConfig()).states() == {}
