"""`BreakerChatModel`: circuit breakers (per model and per provider endpoint) around a `ChatModel`.

When a provider keeps failing, calls fail fast with `CircuitOpen` instead of each waiting for its
own timeout; a `FallbackChatModel` around it then moves on to the next model. Two breakers guard a
call: the model's own (``model:openai:gpt-4o-mini``) and, for a model reached over HTTP, its
endpoint's (``provider:http://host/v1``), so that a dead server stops every model served from it.

What counts (`classify`): `ModelError`s marked ``transient`` (rate limited, unavailable, timed
out) are failures. A bad request is our bug and a refusal is a policy answer; neither says the
provider is down, so both are ignored. A call at least ``slow_call_s`` long counts as slow.

Each call also counts towards the process-wide `RetryBudget`, whose deposits are calls.
"""

from __future__ import annotations

from bastion.clock import Clock
from bastion.errors import CircuitOpen, ModelError
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse
from bastion.resilience.breaker import BreakerBoard, CircuitBreaker, Verdict
from bastion.resilience.retry_budget import RetryBudget


def classify(exc: BaseException | None) -> Verdict:
    """How a model call's result counts against its breakers (None: it succeeded)."""
    if exc is None:
        return Verdict.SUCCESS
    if isinstance(exc, ModelError) and exc.transient:
        return Verdict.FAILURE
    return Verdict.IGNORED


def breaker_names(model: ChatModel) -> tuple[str, ...]:
    """The breakers guarding `model`: its own, and its endpoint's when it has one."""
    names = [f"model:{model.name}"]
    endpoint = getattr(model, "endpoint", None)
    if isinstance(endpoint, str) and endpoint:
        names.append(f"provider:{endpoint}")
    return tuple(names)


class BreakerChatModel(ChatModel):
    """`wrapped`, guarded by its breakers on `board`; same name, same answers.

    Args:
        wrapped: The model to call.
        board: Holds the breakers (see `breaker_names`).
        clock: Measures each call, for the slow-call rate.
        budget: Counts each call towards the retry budget (optional).
    """

    def __init__(
        self,
        wrapped: ChatModel,
        board: BreakerBoard,
        *,
        clock: Clock,
        budget: RetryBudget | None = None,
    ) -> None:
        self._wrapped = wrapped
        self._board = board
        self._clock = clock
        self._budget = budget
        self._names = breaker_names(wrapped)

    @property
    def name(self) -> str:
        return self._wrapped.name

    @property
    def wrapped(self) -> ChatModel:
        """The model behind the breakers."""
        return self._wrapped

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Call the wrapped model unless one of its breakers is open.

        Raises:
            CircuitOpen: a breaker refused the call; the wrapped model was not called.
            ModelError: as the wrapped model.
        """
        admitted: list[CircuitBreaker] = []
        try:
            for name in self._names:
                breaker = await self._board.sync(name)
                breaker.check()
                admitted.append(breaker)
        except CircuitOpen:
            for breaker in admitted:
                breaker.release()
            raise
        if self._budget is not None:
            self._budget.record_call()
        started = self._clock.monotonic()
        try:
            response = await self._wrapped.complete(request)
        except BaseException as exc:
            # Cancelled (or a bug): no verdict on the provider, but free the probe slots.
            self._record(admitted, classify(exc), started)
            if isinstance(exc, Exception):
                await self._board.flush()
            raise
        self._record(admitted, Verdict.SUCCESS, started)
        await self._board.flush()
        return response

    def _record(self, breakers: list[CircuitBreaker], verdict: Verdict, started: float) -> None:
        duration_s = self._clock.monotonic() - started
        for breaker in breakers:
            breaker.record(verdict, duration_s=duration_s)

    async def aclose(self) -> None:
        """Close the wrapped model's client, if it has one."""
        aclose = getattr(self._wrapped, "aclose", None)
        if aclose is not None:
            await aclose()
