"""`Backoff`: how long to wait before the next attempt, as exponential backoff with full jitter.

"Full jitter" (Marc Brooker, AWS Architecture Blog, "Exponential Backoff and Jitter", 2015): the
wait before attempt ``n + 1`` is drawn uniformly from ``[0, min(cap, base * 2 ** (n - 1))]``. Of the
schemes compared there it spreads competing clients best and finishes the work in the fewest calls.
A provider's Retry-After hint is a floor: we never come back sooner than we were asked to.

It only decides; the caller sleeps on its injected `Clock`. The randomness is an injected
`random.Random`, so tests seed it and get the same delays every time.
"""

from __future__ import annotations

import math
import random

# 2.0 ** 62 times any sane base is far above any cap; past it the float would only overflow.
_MAX_EXPONENT = 62


class Backoff:
    """Exponential backoff with full jitter, honouring a retry-after floor.

    Args:
        base_s: The cap on the first wait; each further attempt doubles it.
        max_s: The cap on any wait drawn from the jitter (a retry-after floor may exceed it).
        rng: Where the jitter comes from.

    Raises:
        ValueError: a negative or non-finite `base_s` or `max_s`.
    """

    def __init__(self, *, base_s: float, max_s: float, rng: random.Random) -> None:
        for name, value in (("base_s", base_s), ("max_s", max_s)):
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")
        self._base_s = base_s
        self._max_s = max_s
        self._rng = rng

    def cap(self, attempt: int) -> float:
        """The largest wait the jitter may draw after the `attempt`-th attempt failed."""
        _check_attempt(attempt)
        return min(self._max_s, self._base_s * 2.0 ** min(attempt - 1, _MAX_EXPONENT))

    def delay(self, attempt: int, *, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the `attempt`-th attempt (1 for the first) failed.

        Args:
            attempt: Attempts made so far, counting the one that failed (at least 1).
            retry_after_s: The provider's hint, if any: the result is never below it.

        Returns:
            A wait drawn uniformly from ``[0, cap(attempt)]``, raised to `retry_after_s`.

        Raises:
            ValueError: `attempt` is below 1.
        """
        wait = self._rng.uniform(0.0, self.cap(attempt))
        if retry_after_s is not None:
            wait = max(wait, retry_after_s)
        return wait


def _check_attempt(attempt: int) -> None:
    if attempt < 1:
        raise ValueError(f"attempt counts from 1 (the attempt that failed), got {attempt}")
