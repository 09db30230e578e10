"""`RateLimitedChatModel`: a provider's rate limits (requests and tokens a minute) before each call.

Checked before the call leaves the process, so that we slow down before the provider has to tell
us to. A call over the limit (after waiting, in ``queue`` mode) raises `ModelRateLimited` with the
exact retry-after, the same error a provider's 429 maps to: the Recovery Handler backs off at
least that long, and a `FallbackChatModel` moves on to the next model. It sits outside the model's
breaker: our own throttling says nothing about the provider's health.
"""

from __future__ import annotations

import math

from bastion.errors import ModelBadRequest, ModelRateLimited
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse
from bastion.resilience.limits import Limits

#: Characters per token, for the estimate made before a call (English text averages ~4).
_CHARS_PER_TOKEN = 4


def estimate_tokens(request: ChatRequest) -> int:
    """The most tokens `request` may use: its prompt's estimate plus its output cap."""
    prompt = sum(len(m.content) for m in request.messages) // _CHARS_PER_TOKEN + 1
    return prompt + request.max_tokens


def provider_of(model: ChatModel) -> str:
    """The key a model's provider is limited under: its endpoint, else its provider prefix."""
    endpoint = getattr(model, "endpoint", None)
    if isinstance(endpoint, str) and endpoint:
        return endpoint
    return model.name.partition(":")[0]


class RateLimitedChatModel(ChatModel):
    """`wrapped`, called only within its provider's rate limits.

    Args:
        wrapped: The model to call.
        limits: The system's limits.
        provider: The limit's key (default: `provider_of` the model).
    """

    def __init__(self, wrapped: ChatModel, limits: Limits, *, provider: str | None = None) -> None:
        self._wrapped = wrapped
        self._limits = limits
        self._provider = provider or provider_of(wrapped)

    @property
    def name(self) -> str:
        return self._wrapped.name

    @property
    def wrapped(self) -> ChatModel:
        """The model behind the limits."""
        return self._wrapped

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Charge the provider's limits, then call the wrapped model.

        Raises:
            ModelRateLimited: over the provider's limit; ``retry_after_s`` is the exact wait.
            ModelError: as the wrapped model.
        """
        decision = await self._limits.before_model_call(
            self._provider, tokens=estimate_tokens(request)
        )
        if not decision.allowed:
            wait = decision.retry_after_s
            if math.isinf(wait):
                raise ModelBadRequest(
                    f"the call to {self.name} needs more tokens than the burst of the limit "
                    f"{decision.key}: it can never pass; raise rate_limit.provider_token_burst",
                    model=self.name,
                )
            raise ModelRateLimited(
                f"rate limited, retry after {wait:.3f}s: our own limit {decision.key} for "
                f"provider {self._provider} is spent",
                model=self.name,
                retry_after_s=wait,
            )
        return await self._wrapped.complete(request)

    async def aclose(self) -> None:
        """Close the wrapped model's client, if it has one."""
        aclose = getattr(self._wrapped, "aclose", None)
        if aclose is not None:
            await aclose()
