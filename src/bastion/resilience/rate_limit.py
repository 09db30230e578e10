"""Rate limits as GCRA (the generic cell rate algorithm), keyed, all-or-nothing over several limits.

GCRA (ITU-T I.371; as in Brandur Leach's "Rate limiting, cells and GCRA" and redis-cell) keeps one
number per key, the theoretical arrival time ``tat``. A limit of ``rate`` units per ``period_s``
with a ``burst`` has an emission interval ``T = period_s / rate``; a request of ``cost`` units at
time ``now`` would move it to ``max(tat, now) + cost * T`` and is admitted iff that is at most
``burst * T`` ahead of ``now``. So a fresh key admits ``burst`` units at once, and over any
interval of length Δ at most ``burst + Δ / T`` units (``b + r·Δ``). A rejected request learns the
exact wait, ``new_tat - now - burst * T``: a retry that late passes, any earlier one fails.

A request is usually checked against several limits at once (the user's requests and tokens, the
app's); `RateLimiter.acquire` admits it against all of them or charges none, so a rejection by one
limit never uses up another. Keys are per user, per app, per provider: one user's burst never
touches another's quota. `InProcessLimiter` keeps the state in a dict on the injected clock;
`bastion.resilience.redis_backend.RedisLimiter` keeps it in Redis for several workers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from bastion.clock import Clock
from bastion.errors import ConfigError

#: Float slack when comparing times: far below any wait that matters, far above rounding error,
#: so a retry exactly at the promised instant passes whatever the float arithmetic did.
EPSILON_S = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """At most `rate` units per `period_s`, with bursts of up to `burst` units.

    Raises:
        ConfigError: a non-positive rate, period or burst.
    """

    rate: float
    burst: int
    period_s: float = 60.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate) and self.rate > 0):
            raise ConfigError(f"rate limit: rate must be positive, got {self.rate}")
        if self.burst < 1:
            raise ConfigError(f"rate limit: burst must be at least 1, got {self.burst}")
        if not (math.isfinite(self.period_s) and self.period_s > 0):
            raise ConfigError(f"rate limit: period_s must be positive, got {self.period_s}")

    @property
    def emission_s(self) -> float:
        """The time one unit of the limit stands for (``T``)."""
        return self.period_s / self.rate


@dataclass(frozen=True, slots=True, kw_only=True)
class Charge:
    """One limit a request is checked against: `cost` units of `limit` under `key`."""

    key: str
    limit: Limit
    cost: float = 1.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """Admitted, or rejected with the exact wait before the same request would pass."""

    allowed: bool
    retry_after_s: float = 0.0
    #: The key that refused (the one needing the longest wait), when rejected.
    key: str | None = None

    @classmethod
    def admit(cls) -> Decision:
        """An admitted request (one shared instance: it is immutable and on the hot path)."""
        return _ADMITTED


_ADMITTED = Decision(allowed=True)


def gcra(tat: float | None, now: float, charge: Charge) -> tuple[Decision, float]:
    """One GCRA step: the decision and the key's new ``tat`` (unchanged when rejected).

    Args:
        tat: The key's theoretical arrival time; None for a key never seen (or expired).
        now: The current time on the clock ``tat`` is measured on.
        charge: The key, its limit and the request's cost.

    Returns:
        The decision, and the ``tat`` to store if the request goes ahead.
    """
    limit, cost = charge.limit, charge.cost
    emission = limit.emission_s
    base = now if tat is None or tat < now else tat
    if cost > limit.burst:
        # No wait ever makes room for more than the burst: say so rather than promise a time.
        return Decision(allowed=False, retry_after_s=math.inf, key=charge.key), base
    new_tat = base + cost * emission
    over = new_tat - now - limit.burst * emission
    if over > EPSILON_S:
        return Decision(allowed=False, retry_after_s=over, key=charge.key), base
    return _ADMITTED, new_tat


def combine(decisions: Sequence[Decision]) -> Decision:
    """All admitted → admitted; else the rejection with the longest wait."""
    rejected = [d for d in decisions if not d.allowed]
    if not rejected:
        return Decision.admit()
    return max(rejected, key=lambda d: d.retry_after_s)


class RateLimiter(Protocol):
    """Admits a request against several limits at once, or charges none of them.

    Never raises for a backend outage: a shared backend that is down falls back to limits kept in
    process (never to no limits).
    """

    async def acquire(self, charges: Sequence[Charge]) -> Decision: ...


class InProcessLimiter(RateLimiter):
    """GCRA state in a dict, timed by `clock`: the single-process default.

    Args:
        clock: Its ``monotonic`` times every limit.
        max_keys: Above this many keys, those whose ``tat`` has passed (equivalent to a fresh
            key) are dropped, so that memory follows the active keys, not every key ever seen.
    """

    def __init__(self, *, clock: Clock, max_keys: int = 100_000) -> None:
        self._clock = clock
        self._max_keys = max_keys
        self._tats: dict[str, float] = {}

    async def acquire(self, charges: Sequence[Charge]) -> Decision:
        return self.acquire_now(charges)

    def acquire_now(self, charges: Sequence[Charge]) -> Decision:
        """`acquire`, synchronously (the state is local, nothing to wait for)."""
        now = self._clock.monotonic()
        refused: list[Decision] = []
        new: dict[str, float] = {}
        tats = self._tats
        for charge in charges:
            # Two charges on one key (rare) see each other's effect.
            key = charge.key
            decision, new_tat = gcra(new[key] if key in new else tats.get(key), now, charge)
            if decision.allowed:
                new[key] = new_tat
            else:
                refused.append(decision)
        if refused:
            return combine(refused)
        tats.update(new)
        if len(tats) > self._max_keys:
            self._prune(now)
        return _ADMITTED

    def _prune(self, now: float) -> None:
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
