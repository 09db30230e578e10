"""Circuit breakers: stop calling a tool or model that keeps failing, and probe it back to health.

A rate-based breaker in the manner of resilience4j's ``CircuitBreaker`` (and Envoy's outlier
detection): calls are recorded in a sliding window, either the last ``window_size`` calls (count
window) or the calls of the last ``window_size`` seconds (time window, per-second buckets). Once the
window holds at least ``minimum_calls``, the breaker opens when the share of failures reaches
``failure_rate`` or the share of slow calls (longer than ``slow_call_s``) reaches
``slow_call_rate``. Open, it refuses every call with `CircuitOpen` for ``open_wait_s``; then it is
half-open and admits at most ``half_open_probes`` calls, refusing the rest at once. When every probe
has reported, the probes' own failure and slow rates decide: close (fresh window) or open again.

What counts is the caller's decision, made by a classifier (`Verdict`): a call that failed because
of *our* request (a 400, a validation error of ours, a denied tool) is ``IGNORED``: it frees its
probe slot and counts nothing, so a planner sending bad args cannot switch a tool off for everyone.

The breaker decides; it does not call anything. Its wrappers (`bastion.sandbox.breaker`,
`bastion.models.breaker`) call `check` before a call and record its result after. It lives in one
event loop and is not thread-safe; `bastion.resilience.redis_backend` shares the open state
between processes.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Literal, Protocol

from bastion.clock import Clock
from bastion.errors import CircuitOpen, ConfigError
from bastion.settings import BreakerSettings

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Verdict(StrEnum):
    """How one finished call counts against its breaker."""

    SUCCESS = "success"
    FAILURE = "failure"
    #: The caller's own fault, or no verdict at all (cancelled): counts nothing.
    IGNORED = "ignored"


#: Called with the breaker's name, its old state and its new state (logs, audit, dashboard).
OnChange = Callable[[str, BreakerState, BreakerState], None]


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerConfig:
    """How a breaker judges health. See the module docstring for the algorithm.

    Raises:
        ConfigError: a value out of range (checked on construction).
    """

    window: Literal["count", "time"] = "count"
    #: Calls (count window) or seconds (time window) the rates are computed over.
    window_size: int = 20
    #: Calls the window must hold before any rate may open the breaker.
    minimum_calls: int = 10
    #: Share of failures (0 < x <= 1) that opens the breaker.
    failure_rate: float = 0.5
    #: Share of slow calls (0 < x <= 1) that opens it; 1.0 with a huge `slow_call_s` disables.
    slow_call_rate: float = 1.0
    slow_call_s: float = 60.0
    open_wait_s: float = 30.0
    half_open_probes: int = 1

    def __post_init__(self) -> None:
        checks = (
            (self.window_size >= 1, f"window_size must be at least 1, got {self.window_size}"),
            (
                self.minimum_calls >= 1,
                f"minimum_calls must be at least 1, got {self.minimum_calls}",
            ),
            (
                self.window == "time" or self.minimum_calls <= self.window_size,
                f"minimum_calls ({self.minimum_calls}) cannot exceed a count window's size "
                f"({self.window_size}): the breaker could never open",
            ),
            (
                0 < self.failure_rate <= 1,
                f"failure_rate must be in (0, 1], got {self.failure_rate}",
            ),
            (
                0 < self.slow_call_rate <= 1,
                f"slow_call_rate must be in (0, 1], got {self.slow_call_rate}",
            ),
            (self.slow_call_s > 0, f"slow_call_s must be positive, got {self.slow_call_s}"),
            (
                math.isfinite(self.open_wait_s) and self.open_wait_s > 0,
                f"open_wait_s must be positive, got {self.open_wait_s}",
            ),
            (
                self.half_open_probes >= 1,
                f"half_open_probes must be at least 1, got {self.half_open_probes}",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"circuit breaker: {message}")

    @classmethod
    def consecutive(cls, failures: int, *, open_wait_s: float) -> BreakerConfig:
        """The seed's breaker: open after `failures` failures in a row, one probe.

        A count window of `failures` calls at a failure rate of 100% is exactly that.
        """
        if failures < 1:
            raise ConfigError(f"circuit breaker: failures must be at least 1, got {failures}")
        return cls(
            window="count",
            window_size=failures,
            minimum_calls=failures,
            failure_rate=1.0,
            open_wait_s=open_wait_s,
        )


@dataclass(slots=True)
class _Tally:
    calls: int = 0
    failures: int = 0
    slow: int = 0

    def add(self, failed: bool, slow: bool, sign: int = 1) -> None:
        self.calls += sign
        self.failures += sign * failed
        self.slow += sign * slow


class _Window:
    """The closed state's sliding window: running totals, O(1) per call."""

    def __init__(self, config: BreakerConfig) -> None:
        self._config = config
        self.total = _Tally()
        self._calls: deque[tuple[bool, bool]] = deque()
        # Time window: [second, tally] buckets, oldest first.
        self._buckets: deque[tuple[int, _Tally]] = deque()

    def add(self, now: float, failed: bool, slow: bool) -> None:
        self.total.add(failed, slow)
        if self._config.window == "count":
            self._calls.append((failed, slow))
            if len(self._calls) > self._config.window_size:
                old_failed, old_slow = self._calls.popleft()
                self.total.add(old_failed, old_slow, -1)
            return
        second = math.floor(now)
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append((second, _Tally()))
        self._buckets[-1][1].add(failed, slow)
        self.expire(now)

    def expire(self, now: float) -> None:
        """Drop the buckets that fell out of a time window."""
        oldest = math.floor(now) - self._config.window_size
        while self._buckets and self._buckets[0][0] <= oldest:
            _, gone = self._buckets.popleft()
            self.total.calls -= gone.calls
            self.total.failures -= gone.failures
            self.total.slow -= gone.slow


class CircuitBreaker:
    """A rate-based breaker with bounded half-open probes, timed by `clock`.

    Args:
        name: What the breaker guards, e.g. ``tool:refund`` or ``model:openai:gpt-4o-mini``.
        config: Window, thresholds, open wait, probes.
        clock: Times the window and the open wait.
        on_change: Told of every state change, as it is noticed. An open breaker whose wait has
            passed reads as half-open, but that change is reported at the next `check` or
            record, since nothing happens in between.
    """

    def __init__(
        self,
        name: str,
        *,
        config: BreakerConfig,
        clock: Clock,
        on_change: OnChange | None = None,
    ) -> None:
        self._name = name
        self._config = config
        self._clock = clock
        self._on_change = on_change
        self._window = _Window(config)
        self._opened_at: float | None = None
        self._probes_out = 0
        self._probe_tally = _Tally()
        self._reported = BreakerState.CLOSED

    @property
    def name(self) -> str:
        """What the breaker guards."""
        return self._name

    @property
    def config(self) -> BreakerConfig:
        """How it judges health."""
        return self._config

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker past its wait reads as half-open."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock.monotonic() < self.retry_at:
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def retry_at(self) -> float:
        """When an open breaker starts to admit probes (monotonic); now if it is not open."""
        if self._opened_at is None:
            return self._clock.monotonic()
        return self._opened_at + self._config.open_wait_s

    @property
    def window_calls(self) -> int:
        """Calls counted in the closed state's window now."""
        self._window.expire(self._clock.monotonic())
        return self._window.total.calls

    def check(self) -> None:
        """Admit a call, or refuse it. In half-open, admitting takes one of the probe slots.

        Every admitted call must end in `record_success`, `record_failure` or `release`.

        Raises:
            CircuitOpen: the breaker is open, or half-open with every probe already in flight.
        """
        state = self._observe()
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.OPEN:
            raise CircuitOpen(self._name, self.retry_at)
        if self._probes_out + self._probe_tally.calls >= self._config.half_open_probes:
            # The probes' results are due any moment; there is no later time to promise.
            raise CircuitOpen(self._name, self._clock.monotonic())
        self._probes_out += 1

    def record(self, verdict: Verdict, *, duration_s: float = 0.0) -> None:
        """An admitted call ended: count it as the classifier said."""
        if verdict is Verdict.IGNORED:
            self.release()
            return
        failed = verdict is Verdict.FAILURE
        slow = duration_s >= self._config.slow_call_s
        state = self._observe()
        if state is BreakerState.CLOSED:
            # A count window needs no time: skip the clock on the hot path.
            now = self._clock.monotonic() if self._config.window == "time" else 0.0
            self._window.add(now, failed, slow)
            why = self._tripped(self._window.total, self._config.minimum_calls)
            if why:
                self._open(why)
        elif state is BreakerState.HALF_OPEN:
            self._probes_out = max(0, self._probes_out - 1)
            self._probe_tally.add(failed, slow)
            if self._probe_tally.calls >= self._config.half_open_probes:
                why = self._tripped(self._probe_tally, 1)
                if why:
                    self._open(f"its probes failed ({why})")
                else:
                    self._close()
        # OPEN: a call admitted before the breaker opened finished late; it proves nothing,
        # and must not extend the wait.

    def record_success(self, *, duration_s: float = 0.0) -> None:
        """An admitted call succeeded (slow if `duration_s` reaches the slow-call threshold)."""
        self.record(Verdict.SUCCESS, duration_s=duration_s)

    def record_failure(self, *, duration_s: float = 0.0) -> None:
        """An admitted call failed in a way that says the dependency is unhealthy."""
        self.record(Verdict.FAILURE, duration_s=duration_s)

    def release(self) -> None:
        """An admitted call ended with no verdict (cancelled, or the caller's own fault).

        Frees a half-open probe slot so another call may probe; counts nothing.
        """
        self._probes_out = max(0, self._probes_out - 1)

    def force_open(self, until: float) -> None:
        """Open now until `until` (monotonic): another process's breaker opened (shared state)."""
        if self._opened_at is not None and self.retry_at >= until:
            return
        self._opened_at = until - self._config.open_wait_s
        self._probes_out, self._probe_tally = 0, _Tally()
        self._report(self.state)

    def _tripped(self, tally: _Tally, minimum: int) -> str | None:
        if tally.calls < minimum:
            return None
        config = self._config
        if tally.failures >= config.failure_rate * tally.calls:
            return f"{tally.failures} of the last {tally.calls} calls failed"
        if tally.slow >= config.slow_call_rate * tally.calls:
            return f"{tally.slow} of the last {tally.calls} calls took {config.slow_call_s:g}s+"
        return None

    def _open(self, why: str) -> None:
        self._opened_at = self._clock.monotonic()
        self._probes_out, self._probe_tally = 0, _Tally()
        self._report(BreakerState.OPEN)
        logger.warning(
            "circuit breaker %r opened (%s); calls refused for %gs",
            self._name,
            why,
            self._config.open_wait_s,
        )

    def _close(self) -> None:
        self._opened_at = None
        self._probes_out, self._probe_tally = 0, _Tally()
        self._window = _Window(self._config)
        self._report(BreakerState.CLOSED)
        logger.info("circuit breaker %r closed: its probes succeeded", self._name)

    def _observe(self) -> BreakerState:
        state = self.state
        self._report(state)
        return state

    def _report(self, state: BreakerState) -> None:
        if state is self._reported:
            return
        old, self._reported = self._reported, state
        if self._on_change is None:
            return
        try:
            self._on_change(self._name, old, state)
        except Exception:
            # An observer (metrics, an audit log) must never change whether a call goes ahead.
            logger.exception("on_change hook of circuit breaker %r failed", self._name)


class BreakerShare(Protocol):
    """Where workers share open breakers (`bastion.resilience.redis_backend`). Never raises."""

    async def open_for(self, name: str) -> float | None: ...

    async def publish(
        self, name: str, state: BreakerState, *, open_for_s: float, at: str
    ) -> None: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerEvent:
    """One state change of one breaker, as logged, audited and shown."""

    name: str
    old: BreakerState
    new: BreakerState
    at: datetime


#: Told of every state change, asynchronously (e.g. appends an audit entry). May raise: logged.
EventSink = Callable[[BreakerEvent], Awaitable[None]]


class BreakerBoard:
    """One breaker per name (per tool, per model, per provider endpoint), made on first use.

    State changes are events: logged here, handed to `on_change` at once (synchronously), and
    queued for `sink` and `share`, which `flush` sends (the wrappers flush after each call, so
    a breaker's state change reaches the audit log and other workers right after the call that
    caused it).

    Args:
        clock: Shared by every breaker.
        config: The configuration of every breaker.
        on_change: Given to every breaker (see `CircuitBreaker`).
        sink: Receives every state change (the system appends an audit entry).
        share: Shares open breakers with other workers (Redis); None keeps them in process.
    """

    def __init__(
        self,
        *,
        clock: Clock,
        config: BreakerConfig,
        on_change: OnChange | None = None,
        sink: EventSink | None = None,
        share: BreakerShare | None = None,
    ) -> None:
        self._clock = clock
        self._config = config
        self._on_change = on_change
        self._sink = sink
        self._share = share
        self._breakers: dict[str, CircuitBreaker] = {}
        self._pending: list[BreakerEvent] = []
        self._adopting = False

    @property
    def config(self) -> BreakerConfig:
        """The configuration every breaker gets."""
        return self._config

    @property
    def shared(self) -> bool:
        """Whether open breakers are shared with other workers."""
        return self._share is not None

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called `name`, created closed if it does not exist yet."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name, config=self._config, clock=self._clock, on_change=self._changed
            )
            self._breakers[name] = breaker
        return breaker

    async def sync(self, name: str) -> CircuitBreaker:
        """The breaker `name`, opened first if another worker found its dependency down."""
        breaker = self.get(name)
        if self._pending:
            await self.flush()
        if self._share is not None:
            remaining = await self._share.open_for(name)
            if remaining is not None and breaker.state is BreakerState.CLOSED:
                self._adopting = True
                try:
                    breaker.force_open(self._clock.monotonic() + remaining)
                finally:
                    self._adopting = False
        return breaker

    async def flush(self) -> None:
        """Send queued state changes to the sink and the share. Never raises."""
        while self._pending:
            event = self._pending.pop(0)
            if self._share is not None:
                await self._share.publish(
                    event.name,
                    event.new,
                    open_for_s=self._config.open_wait_s,
                    at=event.at.isoformat(),
                )
            if self._sink is not None:
                try:
                    await self._sink(event)
                except Exception:
                    logger.exception("could not record the state change of breaker %r", event.name)

    def states(self) -> dict[str, BreakerState]:
        """Every breaker's current state, by name, in creation order."""
        return {name: breaker.state for name, breaker in self._breakers.items()}

    def _changed(self, name: str, old: BreakerState, new: BreakerState) -> None:
        logger.info("circuit breaker %r: %s -> %s", name, old, new)
        if not self._adopting:
            # An opening adopted from another worker is already shared and audited there.
            self._pending.append(BreakerEvent(name=name, old=old, new=new, at=self._clock.now()))
        if self._on_change is not None:
            self._on_change(name, old, new)


def config_from_settings(settings: BreakerSettings) -> BreakerConfig:
    """The `BreakerConfig` the ``breaker`` settings section describes.

    Raises:
        ConfigError: the values do not make a usable breaker (e.g. more minimum calls than a
            count window holds).
    """
    return BreakerConfig(
        window=settings.window,
        window_size=settings.window_size,
        minimum_calls=settings.minimum_calls,
        failure_rate=settings.failure_rate,
        slow_call_rate=settings.slow_call_rate,
        slow_call_s=settings.slow_call_s,
        open_wait_s=settings.cooldown_s,
        half_open_probes=settings.half_open_probes,
    )
