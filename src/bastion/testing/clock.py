"""`FakeClock`: time that moves only when a test says so, or when code sleeps on it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from bastion.clock import Clock

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock(Clock):
    """A deterministic clock.

    `sleep` advances the clock by the requested amount at once (an autojump clock), then yields to
    the event loop once so other tasks run, so code that backs off for 30 s finishes instantly while
    a test can still assert exactly how long it asked to wait (`sleeps`).
    """

    def __init__(self, start: float = 1_000.0, *, wall_start: datetime = _EPOCH) -> None:
        self._t = start
        self._start = start
        self._wall_start = wall_start
        #: Every duration passed to `sleep`, in order.
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self._t

    def now(self) -> datetime:
        return self._wall_start + timedelta(seconds=self._t - self._start)

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds` (never backward)."""
        if seconds < 0:
            raise ValueError("a clock never goes back")
        self._t += seconds

    async def sleep(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.sleeps.append(seconds)
        self._t += seconds
        await asyncio.sleep(0)
