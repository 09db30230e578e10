"""`BreakerChatModel`: a circuit breaker around any `ChatModel`.

When a provider keeps failing, calls fail fast with `CircuitOpen` instead of each waiting for
its own timeout; the Recovery Handler can then fall back to another model. Only failures that
say the provider is unhealthy count: `ModelError`s marked ``transient`` (rate limited,
unavailable, timed out). A bad request is our bug and a refusal is a policy answer; neither says
the provider is down, so neither may open the breaker.
"""

from __future__ import annotations

from bastion.errors import ModelError
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse
from bastion.resilience.breaker import CircuitBreaker


class BreakerChatModel(ChatModel):
    """`wrapped`, guarded by `breaker`; same name, same answers.

    Args:
        wrapped: The model to call.
        breaker: Its breaker (e.g. ``board.get(f"model:{wrapped.name}")``).
    """

    def __init__(self, wrapped: ChatModel, breaker: CircuitBreaker) -> None:
        self._wrapped = wrapped
        self._breaker = breaker

    @property
    def name(self) -> str:
        return self._wrapped.name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Call the wrapped model unless the breaker is open.

        Raises:
            CircuitOpen: the breaker refused the call; the wrapped model was not called.
            ModelError: as the wrapped model.
        """
        self._breaker.check()
        try:
            response = await self._wrapped.complete(request)
        except ModelError as exc:
            if exc.transient:
                self._breaker.record_failure()
            else:
                self._breaker.release()
            raise
        except BaseException:
            # Cancelled (or a bug): no verdict on the provider, but free a half-open probe slot.
            self._breaker.release()
            raise
        self._breaker.record_success()
        return response
