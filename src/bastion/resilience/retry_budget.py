"""`RetryBudget`: retries may be at most a set share of calls, process-wide (token bucket).

Per-call retry limits do not stop a retry storm: when a dependency fails every call, three
attempts per call triple its load just when it can least take it. A budget bounds retries across
all calls instead (Finagle's ``RetryBudget``, gRPC's retry throttling, the Google SRE book's
"per-client retry budget"): every call deposits ``ratio`` tokens, every retry withdraws one, so
retries stay at most ``ratio`` of calls (plus a small reserve). ``min_per_s`` tokens a second keep a
quiet system able to retry at all; ``max_tokens`` caps what a long healthy spell may bank, so the
budget cannot fund a storm later.

It decides only; the Recovery Handler asks before each retry, and the model and tool wrappers
count calls.
"""

from __future__ import annotations

from bastion.clock import Clock
from bastion.errors import ConfigError


class RetryBudget:
    """A token bucket of retries, filled by calls and by time.

    Args:
        ratio: Tokens each call deposits (0.1: retries at most 10% of calls).
        min_per_s: Tokens added per second regardless of calls.
        max_tokens: The most the bucket holds (at least 1, so a retry is possible at all).
        clock: Times the per-second refill.

    Raises:
        ConfigError: a ratio outside [0, 1], a negative rate or a cap below 1.
    """

    def __init__(
        self, *, ratio: float, min_per_s: float, clock: Clock, max_tokens: float = 10.0
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ConfigError(f"retry budget: ratio must be in [0, 1], got {ratio}")
        if min_per_s < 0:
            raise ConfigError(f"retry budget: min_per_s must not be negative, got {min_per_s}")
        if max_tokens < 1:
            raise ConfigError(f"retry budget: max_tokens must be at least 1, got {max_tokens}")
        self._ratio = ratio
        self._min_per_s = min_per_s
        self._max = max_tokens
        self._clock = clock
        self._tokens = min(max_tokens, min_per_s)
        self._at = clock.monotonic()
        self.calls = 0
        self.retries = 0
        self.refused = 0

    @property
    def tokens(self) -> float:
        """Retries the budget holds now (fractions included)."""
        self._refill()
        return self._tokens

    def record_call(self) -> None:
        """A call was made (a first attempt or a retry): deposit `ratio`."""
        self._refill()
        self.calls += 1
        self._tokens = min(self._max, self._tokens + self._ratio)

    def try_spend(self) -> bool:
        """Take one retry from the budget; False (and nothing taken) when it is spent."""
        self._refill()
        if self._tokens >= 1:
            self._tokens -= 1
            self.retries += 1
            return True
        self.refused += 1
        return False

    def _refill(self) -> None:
        now = self._clock.monotonic()
        elapsed, self._at = now - self._at, now
        if elapsed > 0 and self._min_per_s > 0:
            self._tokens = min(self._max, self._tokens + elapsed * self._min_per_s)
