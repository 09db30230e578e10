"""`FallbackChatModel`: a chain of models, primary first, for when a provider is down.

Graceful degradation for failures, not for quality (the Cost Controller's cascade escalates to a
stronger model when an answer is not good enough; this module knows nothing of that). A call goes
to the first model of the chain; if it is down, to the next, and so on (pydantic-ai's
``FallbackModel``). "Down" means its breaker is open (`CircuitOpen`, refused without waiting) or
the call failed in a way a retry might fix (a transient `ModelError`: 5xx, timeout, 429). A bad
request or a refusal is raised at once: another model would not make our request right.

Departure from the issue's wording ("taken when a breaker is open or retries are exhausted"): the
switch happens within one attempt, not after the Recovery Handler's retries of the primary. Backing
off on a dead primary while a healthy fallback waits only spends the run's deadline; the primary's
own breaker still sees every failure, opens, and from then on is skipped without a call. When every
model is down, the last error is raised, and the Recovery Handler retries the whole chain (with
backoff and Retry-After), so "retries exhausted" ends on the last model of the chain.

The answering model is named in the response (`ChatResponse.model`) and the models skipped on the
way in `ChatResponse.fallback_from`, which the flow turns into a degraded notice.
"""

from __future__ import annotations

import dataclasses
import logging

from bastion.errors import CircuitOpen, ConfigError, ModelError
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse

logger = logging.getLogger(__name__)


def falls_over(exc: BaseException) -> bool:
    """Whether `exc` from one model of the chain sends the call on to the next."""
    return isinstance(exc, CircuitOpen) or (isinstance(exc, ModelError) and exc.transient)


class FallbackChatModel(ChatModel):
    """`primary`, then each of `fallbacks` in order while the ones before are down.

    Args:
        primary: The model the chain is named after.
        fallbacks: Tried in order when the models before them are down.

    Raises:
        ConfigError: no fallback given (use the primary alone).
    """

    def __init__(self, primary: ChatModel, *fallbacks: ChatModel) -> None:
        if not fallbacks:
            raise ConfigError("FallbackChatModel needs at least one fallback model")
        self._models = (primary, *fallbacks)

    @property
    def name(self) -> str:
        return self._models[0].name

    @property
    def models(self) -> tuple[ChatModel, ...]:
        """The chain, primary first."""
        return self._models

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Ask each model in turn until one answers.

        Raises:
            CircuitOpen | ModelError: the last model's error when every model is down, or the
                first error that is not about a model being down.
        """
        skipped: list[str] = []
        last = len(self._models) - 1
        for index, model in enumerate(self._models):
            try:
                response = await model.complete(request)
            except (CircuitOpen, ModelError) as exc:
                if index == last or not falls_over(exc):
                    raise
                why = "circuit open" if isinstance(exc, CircuitOpen) else type(exc).__name__
                skipped.append(f"{model.name} ({why})")
                logger.warning(
                    "model %s is down (%s); falling back to the next model", model.name, exc
                )
                continue
            if skipped:
                return dataclasses.replace(response, fallback_from=tuple(skipped))
            return response
        raise AssertionError("unreachable: the last model returns or raises")  # pragma: no cover

    async def aclose(self) -> None:
        """Close every model of the chain that holds a client."""
        for model in self._models:
            aclose = getattr(model, "aclose", None)
            if aclose is not None:
                await aclose()
