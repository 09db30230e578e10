"""Circuit breakers: stop calling a tool or model that keeps failing, and probe it back to health.

A breaker counts consecutive failures. At ``failure_threshold`` it opens: every call is refused
with `CircuitOpen` until ``cooldown_s`` has passed on the injected clock. Then it is half-open: it
admits exactly one probe call at a time; the probe's success closes it, its failure opens it for
another cooldown. (The seed's breaker let every caller through once the cooldown was over, so a
burst of callers all hit a service that was still down.)

The breaker decides; it does not call anything. Its wrappers (`bastion.sandbox.breaker`,
`bastion.models.breaker`) call `check` before a call and record its result after. It lives in one
event loop and is not thread-safe; state shared by replicas is a later issue (DESIGN.md §3).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

from bastion.clock import Clock
from bastion.errors import CircuitOpen, ConfigError
from bastion.settings import BreakerSettings

logger = logging.getLogger(__name__)


class BreakerState(StrEnum):
    """Where a breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


#: Called with the breaker's name, its old state and its new state (metrics, logs, dashboard).
OnChange = Callable[[str, BreakerState, BreakerState], None]


class CircuitBreaker:
    """A consecutive-failure breaker with a single-probe half-open state, timed by `clock`.

    Args:
        name: What the breaker guards, e.g. ``tool:refund`` or ``model:openai:gpt-4o-mini``.
        failure_threshold: Consecutive failures that open the breaker.
        cooldown_s: How long it stays open before admitting a probe.
        clock: Times the cooldown.
        on_change: Told of every state change, as it is noticed. An open breaker whose cooldown
            has passed reads as half-open, but that change is reported at the next `check` or
            record, since nothing happens in between.

    Raises:
        ConfigError: the threshold is below 1 or the cooldown not positive.
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cooldown_s: float,
        clock: Clock,
        on_change: OnChange | None = None,
    ) -> None:
        if failure_threshold < 1:
            raise ConfigError(f"breaker {name!r}: failure_threshold must be at least 1")
        if not cooldown_s > 0:
            raise ConfigError(f"breaker {name!r}: cooldown_s must be positive, got {cooldown_s}")
        self._name = name
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._on_change = on_change
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False
        self._reported = BreakerState.CLOSED

    @property
    def name(self) -> str:
        """What the breaker guards."""
        return self._name

    @property
    def state(self) -> BreakerState:
        """The state now: an open breaker past its cooldown reads as half-open."""
        if self._opened_at is None:
            return BreakerState.CLOSED
        if self._clock.monotonic() < self._retry_at():
            return BreakerState.OPEN
        return BreakerState.HALF_OPEN

    @property
    def failures(self) -> int:
        """Consecutive failures counted while closed."""
        return self._failures

    def check(self) -> None:
        """Admit a call, or refuse it. In half-open, admitting takes the single probe slot.

        Every admitted call must end in `record_success`, `record_failure` or `release`.

        Raises:
            CircuitOpen: the breaker is open, or half-open with its probe already in flight.
        """
        state = self._observe()
        if state is BreakerState.CLOSED:
            return
        if state is BreakerState.OPEN:
            raise CircuitOpen(self._name, self._retry_at())
        if self._probing:
            # The probe's result is due any moment; there is no later time to promise.
            raise CircuitOpen(self._name, self._clock.monotonic())
        self._probing = True

    def record_success(self) -> None:
        """An admitted call succeeded: reset the count, or close after a successful probe."""
        state = self._observe()
        if state is BreakerState.CLOSED:
            self._failures = 0
        elif state is BreakerState.HALF_OPEN:
            self._failures = 0
            self._opened_at = None
            self._probing = False
            self._report(BreakerState.CLOSED)
        # OPEN: a call admitted before the breaker opened finished late; it proves nothing.

    def record_failure(self) -> None:
        """An admitted call failed: count it, opening at the threshold; a failed probe reopens."""
        state = self._observe()
        if state is BreakerState.CLOSED:
            self._failures += 1
            if self._failures >= self._threshold:
                self._open(f"{self._failures} consecutive failures")
        elif state is BreakerState.HALF_OPEN:
            self._open("its probe call failed")
        # OPEN: a late failure of a call admitted before opening must not extend the cooldown.

    def release(self) -> None:
        """An admitted call ended with no verdict (cancelled, or the caller's own fault).

        Frees the half-open probe slot so another call may probe; counts nothing. Calls carry
        no token, so a call admitted while closed that ends this way during half-open frees the
        slot too: at worst a second probe, never a breaker stuck half-open.
        """
        self._probing = False

    def _open(self, why: str) -> None:
        self._opened_at = self._clock.monotonic()
        self._probing = False
        self._report(BreakerState.OPEN)
        logger.warning(
            "circuit breaker %r opened (%s); calls refused for %gs",
            self._name,
            why,
            self._cooldown_s,
        )

    def _retry_at(self) -> float:
        assert self._opened_at is not None
        return self._opened_at + self._cooldown_s

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
            # An observer (metrics, a dashboard) must never change whether a call goes ahead.
            logger.exception("on_change hook of circuit breaker %r failed", self._name)


class BreakerBoard:
    """One breaker per name, created on first use with the same settings.

    Args:
        clock: Shared by every breaker.
        settings: Threshold and cooldown for every breaker.
        on_change: Given to every breaker (see `CircuitBreaker`).
    """

    def __init__(
        self, *, clock: Clock, settings: BreakerSettings, on_change: OnChange | None = None
    ) -> None:
        self._clock = clock
        self._settings = settings
        self._on_change = on_change
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str) -> CircuitBreaker:
        """The breaker called `name`, created closed if it does not exist yet."""
        breaker = self._breakers.get(name)
        if breaker is None:
            breaker = CircuitBreaker(
                name,
                failure_threshold=self._settings.failure_threshold,
                cooldown_s=self._settings.cooldown_s,
                clock=self._clock,
                on_change=self._on_change,
            )
            self._breakers[name] = breaker
        return breaker

    def states(self) -> dict[str, BreakerState]:
        """Every breaker's current state, by name, in creation order."""
        return {name: breaker.state for name, breaker in self._breakers.items()}
