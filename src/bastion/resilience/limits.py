"""`Limits`: the configured rate limits (per user, per app, per provider), queue or reject.

Turns the ``rate_limit`` settings into `Charge`s on a `RateLimiter` and acts on the decision:
``reject`` raises at once with the exact retry-after; ``queue`` waits that long on the clock when
it is at most ``max_queue_s`` (and inside the caller's time left), then asks again. Admission
(`bastion.flow.admit`) charges the user's and the app's limits, requests and an estimate of the
tokens; `bastion.models.rate_limited` charges the provider's before each model call.

It also counts rejections by scope, for the HTTP service and ``bastion status``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from bastion.clock import Clock
from bastion.errors import RateLimited
from bastion.resilience.rate_limit import Charge, Decision, Limit, RateLimiter
from bastion.settings import RateLimitSettings


def _limit(rate: float | None, burst: int) -> Limit | None:
    return None if rate is None else Limit(rate=rate, burst=burst, period_s=60.0)


class Limits:
    """The rate limits of one system.

    Args:
        limiter: Keeps the GCRA state (in process or Redis).
        settings: The ``rate_limit`` section.
        clock: Waits in ``queue`` mode.
    """

    def __init__(self, *, limiter: RateLimiter, settings: RateLimitSettings, clock: Clock) -> None:
        s = settings
        self._limiter = limiter
        self._settings = settings
        self._clock = clock
        self._user_requests = _limit(s.user_requests_per_min, s.user_request_burst)
        self._user_tokens = _limit(s.user_tokens_per_min, s.user_token_burst)
        self._app_requests = _limit(s.app_requests_per_min, s.app_request_burst)
        self._app_tokens = _limit(s.app_tokens_per_min, s.app_token_burst)
        self._provider_requests = _limit(s.provider_requests_per_min, s.provider_request_burst)
        self._provider_tokens = _limit(s.provider_tokens_per_min, s.provider_token_burst)
        #: Rejections so far, by scope (``user``, ``app``, ``provider``).
        self.rejections: Counter[str] = Counter()

    @property
    def limiter(self) -> RateLimiter:
        """Where the state is kept."""
        return self._limiter

    def admission_charges(self, user_id: str, tokens: int) -> list[Charge]:
        """What starting a run of `user_id`, estimated at `tokens` tokens, is charged."""
        app = self._settings.app
        out: list[Charge] = []
        for key, limit, cost in (
            (f"user:{user_id}:req", self._user_requests, 1),
            (f"user:{user_id}:tok", self._user_tokens, tokens),
            (f"app:{app}:req", self._app_requests, 1),
            (f"app:{app}:tok", self._app_tokens, tokens),
        ):
            if limit is not None:
                out.append(Charge(key=key, limit=limit, cost=min(cost, limit.burst)))
        return out

    def provider_charges(self, provider: str, tokens: int) -> list[Charge]:
        """What one call to `provider` of at most `tokens` tokens is charged."""
        out: list[Charge] = []
        if self._provider_requests is not None:
            out.append(Charge(key=f"provider:{provider}:req", limit=self._provider_requests))
        if self._provider_tokens is not None:
            out.append(
                Charge(key=f"provider:{provider}:tok", limit=self._provider_tokens, cost=tokens)
            )
        return out

    async def admit(self, user_id: str, *, tokens: int, time_left_s: float = math.inf) -> None:
        """Charge a new run to its user's and the app's limits.

        Raises:
            RateLimited: over a limit (its ``retry_after_s`` is exact), after waiting in queue
                mode if the wait was allowed.
        """
        await self._acquire(self.admission_charges(user_id, tokens), time_left_s)

    async def before_model_call(
        self, provider: str, *, tokens: int, time_left_s: float = math.inf
    ) -> Decision:
        """Charge one model call to its provider's limits; the decision after any queueing."""
        charges = self.provider_charges(provider, tokens)
        if not charges:
            return Decision.admit()
        return await self._decide(charges, time_left_s)

    async def _acquire(self, charges: Sequence[Charge], time_left_s: float) -> None:
        if not charges:
            return
        decision = await self._decide(charges, time_left_s)
        if not decision.allowed:
            raise rate_limited(decision)

    async def _decide(self, charges: Sequence[Charge], time_left_s: float) -> Decision:
        decision = await self._limiter.acquire(charges)
        waited = 0.0
        while (
            not decision.allowed
            and self._settings.mode == "queue"
            and waited + decision.retry_after_s <= self._settings.max_queue_s
            and waited + decision.retry_after_s <= time_left_s
        ):
            await self._clock.sleep(decision.retry_after_s)
            waited += decision.retry_after_s
            decision = await self._limiter.acquire(charges)
        if not decision.allowed:
            self.rejections[(decision.key or "?").split(":", 1)[0]] += 1
        return decision


def rate_limited(decision: Decision) -> RateLimited:
    """The `RateLimited` error for a rejection, naming the limit and the exact wait."""
    wait = decision.retry_after_s
    if math.isinf(wait):
        return RateLimited(
            f"rate limited by {decision.key}: the request is larger than the limit's burst and "
            "can never pass; raise the burst or make the request smaller",
            retry_after_s=None,
        )
    error = RateLimited(
        f"rate limited by {decision.key}, retry after {wait:.3f}s", retry_after_s=wait
    )
    error.user_message = (
        f"Too many requests right now. Please try again in {max(1, math.ceil(wait))} seconds."
    )
    return error
