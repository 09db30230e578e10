"""Time as a dependency: every deadline, breaker, backoff and timestamp reads an injected `Clock`.

`SystemClock` is the real one; `bastion.testing.FakeClock` moves only when told, so tests of
time-based logic never sleep (trio's `Clock` / `MockClock` split).
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """A source of time. `monotonic` for intervals and deadlines, `now` for wall-clock stamps."""

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back; only differences mean anything."""
        ...

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds` (at least zero) on this clock."""
        ...


class SystemClock(Clock):
    """The machine's clocks."""

    def monotonic(self) -> float:
        return time.monotonic()

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
