"""Shared resilience state in Redis: GCRA rate limits and open breakers, for several workers.

Selected by ``resilience.state_url = "redis://host:6379/0"`` (`bastion.resilience.shared`). Two
pieces, each behind the same protocol as its in-process counterpart:

* `RedisLimiter`: one Lua script checks every charge of a request and updates them all or none,
  atomically (Redis runs a script alone), with Redis's own ``TIME`` as the clock, so that workers
  on different machines agree on time. The ``tat`` keys expire once they no longer limit anything.
* `RedisBreakerShare`: when a worker's breaker opens, it writes ``<prefix>:breaker:<name>`` with a
  TTL of the open wait; every worker reads that TTL before a call and opens its own breaker for the
  rest of it. Windows and half-open probes stay per worker (each probes on its own, at most
  ``half_open_probes`` at a time): the shared part is the verdict "this dependency is down".
  The last state of every breaker is kept in the hash ``<prefix>:breakers`` for ``bastion status``.

Redis down (refused, timed out, reset) never crashes a call and never admits unlimited traffic:
the limiter warns once and enforces the same limits in process until Redis answers again (tried
again after ``retry_s``); the breaker share reads as "nothing shared" and local breakers go on.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any, Final

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from bastion.clock import Clock
from bastion.resilience.breaker import BreakerState
from bastion.resilience.rate_limit import (
    EPSILON_S,
    Charge,
    Decision,
    InProcessLimiter,
    RateLimiter,
)

logger = logging.getLogger(__name__)

#: Everything that means "Redis did not answer": the client's errors and socket errors under them.
REDIS_DOWN: Final = (RedisError, OSError, TimeoutError)

# KEYS: one per charge. ARGV: epsilon, then (emission_s, burst, cost) per charge.
# Returns {1, "0", ""} when admitted, {0, wait_s, key} when not. Times are seconds as doubles,
# stored with microsecond precision ("%.6f"): Lua's tostring would keep only 14 digits.
_GCRA_LUA: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local eps = tonumber(ARGV[1])
local new = {}
local worst, worst_key = -1, ''
for i = 1, #KEYS do
  local emission = tonumber(ARGV[3 * i - 1])
  local burst = tonumber(ARGV[3 * i])
  local cost = tonumber(ARGV[3 * i + 1])
  local tat = tonumber(new[KEYS[i]] or redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  local nt = tat + cost * emission
  local over = nt - now - burst * emission
  if over > eps and over > worst then worst, worst_key = over, KEYS[i] end
  new[KEYS[i]] = nt
end
if worst > 0 then return {0, string.format('%.6f', worst), worst_key} end
for key, nt in pairs(new) do
  redis.call('SET', key, string.format('%.6f', nt), 'PX', math.ceil((nt - now) * 1000) + 1000)
end
return {1, '0', ''}
"""


def connect(url: str) -> aioredis.Redis:
    """A client for `url` with short timeouts: a dead Redis must cost milliseconds, not seconds."""
    client: aioredis.Redis = aioredis.Redis.from_url(
        url, socket_connect_timeout=0.25, socket_timeout=0.5, decode_responses=True
    )
    return client


class RedisLimiter(RateLimiter):
    """GCRA limits shared through Redis; in-process limits while Redis is down.

    Args:
        client: The Redis client (see `connect`).
        clock: Times the in-process fallback and when to try Redis again.
        prefix: Prepended to every key (one per deployment, or per test).
        fallback: The limiter used while Redis is down (default: a fresh in-process one).
        retry_s: How long to keep to the fallback before trying Redis again.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        clock: Clock,
        prefix: str = "bastion",
        fallback: InProcessLimiter | None = None,
        retry_s: float = 5.0,
    ) -> None:
        self._client = client
        self._clock = clock
        self._prefix = prefix
        self._fallback = fallback or InProcessLimiter(clock=clock)
        self._retry_s = retry_s
        self._script = client.register_script(_GCRA_LUA)
        self._down_until: float | None = None

    @property
    def degraded(self) -> bool:
        """Whether limits are being kept in process because Redis is down."""
        return self._down_until is not None

    async def acquire(self, charges: Sequence[Charge]) -> Decision:
        if any(c.cost > c.limit.burst for c in charges):
            # Never admissible: no need to ask Redis (and nothing to charge).
            return self._fallback.acquire_now(charges)
        if self._down_until is not None and self._clock.monotonic() < self._down_until:
            return self._fallback.acquire_now(charges)
        keys = [f"{self._prefix}:rl:{c.key}" for c in charges]
        args: list[Any] = [EPSILON_S]
        for c in charges:
            args.extend((repr(c.limit.emission_s), c.limit.burst, repr(float(c.cost))))
        try:
            raw = await self._script(keys=keys, args=args)
        except REDIS_DOWN as exc:
            if self._down_until is None:
                logger.warning(
                    "Redis is unreachable for rate limits (%s); enforcing them in this process "
                    "until it answers again",
                    exc,
                )
            self._down_until = self._clock.monotonic() + self._retry_s
            return self._fallback.acquire_now(charges)
        if self._down_until is not None:
            logger.warning("Redis answers again: rate limits are shared again")
            self._down_until = None
        allowed, wait, key = raw
        if int(allowed) == 1:
            return Decision.admit()
        return Decision(
            allowed=False,
            retry_after_s=float(wait),
            key=str(key).removeprefix(f"{self._prefix}:rl:"),
        )

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()


class RedisBreakerShare:
    """Open breakers shared through Redis (see the module docstring).

    Args:
        client: The Redis client.
        prefix: Prepended to every key.
        clock: With `refresh_s`, times how long an answer of Redis is reused.
        refresh_s: How long a worker reuses what Redis said about a breaker before asking again:
            an opening elsewhere is adopted at most this late, and a call costs one round trip
            to Redis (the limiter's) instead of two. 0 asks before every call.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        prefix: str = "bastion",
        clock: Clock | None = None,
        refresh_s: float = 0.0,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._warned = False
        self._clock = clock
        self._refresh_s = refresh_s if clock is not None else 0.0
        self._known: dict[str, tuple[float, float | None]] = {}

    @property
    def client(self) -> aioredis.Redis:
        """The Redis client (shared with the limiter)."""
        return self._client

    async def open_for(self, name: str) -> float | None:
        """Seconds the breaker `name` stays open by another worker's verdict; None if not open.

        Never raises: Redis down reads as "nothing shared", with one warning.
        """
        now = self._clock.monotonic() if self._clock is not None else 0.0
        if self._refresh_s > 0 and name in self._known:
            asked_at, open_for = self._known[name]
            if now - asked_at < self._refresh_s:
                left = None if open_for is None else open_for - (now - asked_at)
                return left if left is not None and left > 0 else None
        try:
            ttl_ms = await self._client.pttl(f"{self._prefix}:breaker:{name}")
        except REDIS_DOWN as exc:
            self._warn(exc)
            return None
        self._warned = False
        remaining = ttl_ms / 1000 if ttl_ms > 0 else None
        if self._refresh_s > 0:
            self._known[name] = (now, remaining)
        return remaining

    async def publish(self, name: str, state: BreakerState, *, open_for_s: float, at: str) -> None:
        """Record a state change; an opening is shared for `open_for_s`. Never raises."""
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                if state is BreakerState.OPEN:
                    pipe.set(
                        f"{self._prefix}:breaker:{name}", "open", px=math.ceil(open_for_s * 1000)
                    )
                elif state is BreakerState.CLOSED:
                    pipe.delete(f"{self._prefix}:breaker:{name}")
                pipe.hset(
                    f"{self._prefix}:breakers", name, json.dumps({"state": str(state), "at": at})
                )
                await pipe.execute()
        except REDIS_DOWN as exc:
            self._warn(exc)

    async def states(self) -> dict[str, dict[str, str]]:
        """The last reported state of every breaker, by name (for ``bastion status``).

        Raises:
            RedisError: Redis cannot be read (the status command says so).
        """
        raw = await self._client.hgetall(f"{self._prefix}:breakers")
        out: dict[str, dict[str, str]] = {}
        for name, value in sorted((str(k), str(v)) for k, v in raw.items()):
            entry = json.loads(value)
            ttl = await self._client.pttl(f"{self._prefix}:breaker:{name}")
            if entry.get("state") == BreakerState.OPEN and ttl <= 0:
                entry["state"] = str(BreakerState.HALF_OPEN)  # its open wait has passed
            out[name] = {str(k): str(v) for k, v in entry.items()}
        return out

    def _warn(self, exc: BaseException) -> None:
        if not self._warned:
            self._warned = True
            logger.warning("Redis is unreachable for breaker state (%s); breakers stay local", exc)
