"""Resilience primitives, each usable on its own: they decide, their callers act.

* `Backoff` (backoff.py): exponential backoff with full jitter, Retry-After as a floor.
* `parse_retry_after` (retry_after.py): a provider's hint, in its three forms, as seconds.
* `CircuitBreaker`, `BreakerBoard` (breaker.py): rate-based breakers with bounded half-open probes.
* `RetryBudget` (retry_budget.py): retries at most a share of calls, process-wide.
* `InProcessLimiter`, `Limit`, `Charge` (rate_limit.py): GCRA rate limits, all-or-nothing.
* `Limits` (limits.py): the configured per-user, per-app and per-provider limits, queue or reject.
* redis_backend.py: the same limits and open breakers shared by workers through Redis (extra
  ``redis``); imported on demand, never from here.
"""

from bastion.resilience.backoff import Backoff
from bastion.resilience.breaker import (
    BreakerBoard,
    BreakerConfig,
    BreakerEvent,
    BreakerState,
    CircuitBreaker,
    Verdict,
)
from bastion.resilience.limits import Limits
from bastion.resilience.rate_limit import Charge, Decision, InProcessLimiter, Limit, RateLimiter
from bastion.resilience.retry_after import parse_retry_after
from bastion.resilience.retry_budget import RetryBudget

__all__ = [
    "Backoff",
    "BreakerBoard",
    "BreakerConfig",
    "BreakerEvent",
    "BreakerState",
    "Charge",
    "CircuitBreaker",
    "Decision",
    "InProcessLimiter",
    "Limit",
    "Limits",
    "RateLimiter",
    "RetryBudget",
    "Verdict",
    "parse_retry_after",
]
