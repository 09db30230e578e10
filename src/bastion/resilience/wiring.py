"""`build_resilience`: the breakers, rate limits and retry budget of one system, from settings.

`AgentSystem.from_settings` and ``bastion status`` build them here, so that both pick the backend
the same way: in process by default, Redis when ``resilience.state_url`` names one (the ``redis``
extra must then be installed). The Redis client connects lazily: a Redis that is down at start is
no error, only a warning at the first call, and limits are then kept in process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.resilience.breaker import BreakerBoard, EventSink, config_from_settings
from bastion.resilience.limits import Limits
from bastion.resilience.rate_limit import InProcessLimiter, RateLimiter
from bastion.resilience.retry_budget import RetryBudget
from bastion.settings import Settings

if TYPE_CHECKING:
    from bastion.resilience.redis_backend import RedisBreakerShare


@dataclass(frozen=True, slots=True, kw_only=True)
class Resilience:
    """What the wrappers, the admission stage and the Recovery Handler share."""

    board: BreakerBoard
    limits: Limits
    budget: RetryBudget
    #: Set when state is shared through Redis.
    share: RedisBreakerShare | None = None


def redis_share(settings: Settings, *, clock: Clock | None = None) -> RedisBreakerShare | None:
    """The Redis breaker share `settings` name, or None for in-process state.

    Raises:
        ConfigError: a state URL that is not ``redis://`` / ``rediss://``, or the ``redis``
            package missing.
    """
    url = settings.resilience.state_url
    if url is None:
        return None
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(
            f"resilience.state_url={url!r}: only Redis is supported, e.g. redis://127.0.0.1:6379/0"
        )
    try:
        from bastion.resilience.redis_backend import RedisBreakerShare, connect
    except ImportError as exc:
        raise ConfigError(
            "resilience.state_url names Redis but the redis package is not installed: "
            "pip install 'bastion-agents[redis]'"
        ) from exc
    return RedisBreakerShare(
        connect(url),
        prefix=settings.resilience.key_prefix,
        clock=clock,
        refresh_s=settings.resilience.breaker_refresh_s,
    )


def build_resilience(
    settings: Settings, *, clock: Clock, sink: EventSink | None = None
) -> Resilience:
    """Breakers, limits and the retry budget as `settings` configure them.

    Args:
        settings: The ``breaker``, ``rate_limit``, ``recovery`` and ``resilience`` sections.
        clock: Times everything in process.
        sink: Receives every breaker state change (the system audits them).

    Raises:
        ConfigError: a bad breaker configuration or state URL.
    """
    share = redis_share(settings, clock=clock)
    limiter: RateLimiter = InProcessLimiter(clock=clock)
    if share is not None:
        from bastion.resilience.redis_backend import RedisLimiter

        limiter = RedisLimiter(share.client, clock=clock, prefix=settings.resilience.key_prefix)
    board = BreakerBoard(
        clock=clock, config=config_from_settings(settings.breaker), sink=sink, share=share
    )
    recovery = settings.recovery
    return Resilience(
        board=board,
        limits=Limits(limiter=limiter, settings=settings.rate_limit, clock=clock),
        budget=RetryBudget(
            ratio=recovery.retry_budget_ratio,
            min_per_s=recovery.retry_budget_min_per_s,
            clock=clock,
            max_tokens=recovery.retry_budget_max,
        ),
        share=share,
    )
