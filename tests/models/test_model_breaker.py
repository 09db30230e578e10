from __future__ import annotations

import asyncio

import pytest

from bastion.errors import (
    CircuitOpen,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.breaker import BreakerChatModel
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, as_messages
from bastion.resilience.breaker import BreakerBoard, BreakerConfig, BreakerState, CircuitBreaker
from bastion.testing.clock import FakeClock

REQUEST = ChatRequest(messages=as_messages([("user", "hi")]))
RESPONSE = ChatResponse(text="hello", model="fake:m")


class FakeModel(ChatModel):
    """Raises or answers as scripted; counts calls."""

    def __init__(self, *script: ChatResponse | BaseException) -> None:
        self.script = list(script)
        self.calls = 0

    @property
    def name(self) -> str:
        return "fake:m"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


class HangingModel(ChatModel):
    def __init__(self) -> None:
        self.started = asyncio.Event()

    @property
    def name(self) -> str:
        return "fake:hang"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


def make(
    *script: ChatResponse | BaseException, threshold: int = 2
) -> tuple[BreakerChatModel, FakeModel, CircuitBreaker, FakeClock]:
    clock = FakeClock()
    board = BreakerBoard(clock=clock, config=BreakerConfig.consecutive(threshold, open_wait_s=10.0))
    inner = FakeModel(*script)
    model = BreakerChatModel(inner, board, clock=clock)
    return model, inner, board.get("model:fake:m"), clock


async def test_keeps_the_wrapped_name_and_answers() -> None:
    model, inner, breaker, _ = make(RESPONSE)

    assert model.name == "fake:m"
    assert await model.complete(REQUEST) is RESPONSE
    assert inner.calls == 1
    assert breaker.state is BreakerState.CLOSED


@pytest.mark.parametrize(
    "error",
    [ModelUnavailable("503"), ModelTimeout("slow"), ModelRateLimited("429", retry_after_s=1)],
)
async def test_transient_errors_open_the_breaker(error: ModelError) -> None:
    model, _inner, breaker, _ = make(error, error)

    for _ in range(2):
        with pytest.raises(type(error)):
            await model.complete(REQUEST)

    assert breaker.state is BreakerState.OPEN


async def test_open_breaker_rejects_without_calling_model() -> None:
    model, inner, _, clock = make(ModelUnavailable("a"), ModelUnavailable("b"))
    for _ in range(2):
        with pytest.raises(ModelUnavailable):
            await model.complete(REQUEST)

    with pytest.raises(CircuitOpen) as info:
        await model.complete(REQUEST)

    assert inner.calls == 2
    assert info.value.name == "model:fake:m"
    assert info.value.retry_at == clock.monotonic() + 10.0


@pytest.mark.parametrize("error", [ModelBadRequest("bad schema"), ModelRefused("policy")])
async def test_non_transient_errors_never_count(error: ModelError) -> None:
    model, inner, breaker, _ = make(*[error] * 4)

    for _ in range(4):
        with pytest.raises(type(error)):
            await model.complete(REQUEST)

    assert inner.calls == 4
    assert breaker.state is BreakerState.CLOSED
    assert breaker.window_calls == 0


async def test_probe_success_closes_and_probe_failure_reopens() -> None:
    model, _inner, breaker, clock = make(
        ModelTimeout("1"), ModelTimeout("2"), ModelTimeout("probe"), RESPONSE
    )
    for _ in range(2):
        with pytest.raises(ModelTimeout):
            await model.complete(REQUEST)
    clock.advance(10.0)

    with pytest.raises(ModelTimeout):
        await model.complete(REQUEST)
    with pytest.raises(CircuitOpen):  # open again: not even half-open
        breaker.check()
    clock.advance(10.0)
    assert await model.complete(REQUEST) is RESPONSE
    assert breaker.state is BreakerState.CLOSED


async def test_bad_request_as_probe_frees_the_slot() -> None:
    model, _inner, breaker, clock = make(
        ModelTimeout("1"), ModelBadRequest("oops"), RESPONSE, threshold=1
    )
    with pytest.raises(ModelTimeout):
        await model.complete(REQUEST)
    clock.advance(10.0)

    with pytest.raises(ModelBadRequest):
        await model.complete(REQUEST)
    assert breaker.state is BreakerState.HALF_OPEN
    assert await model.complete(REQUEST) is RESPONSE


async def test_unexpected_exception_propagates_without_counting() -> None:
    model, _inner, breaker, _ = make(RuntimeError("bug"), threshold=1)

    with pytest.raises(RuntimeError, match="bug"):
        await model.complete(REQUEST)

    assert breaker.state is BreakerState.CLOSED


async def test_cancelled_probe_does_not_count_and_frees_the_slot() -> None:
    clock = FakeClock()
    board = BreakerBoard(clock=clock, config=BreakerConfig.consecutive(1, open_wait_s=10.0))
    breaker = board.get("model:fake:hang")
    breaker.check()
    breaker.record_failure()
    clock.advance(10.0)
    inner = HangingModel()
    model = BreakerChatModel(inner, board, clock=clock)

    task = asyncio.create_task(model.complete(REQUEST))
    await inner.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.state is BreakerState.HALF_OPEN
    breaker.check()  # the probe slot was released


async def test_cancelled_call_while_closed_does_not_count() -> None:
    clock = FakeClock()
    board = BreakerBoard(clock=clock, config=BreakerConfig.consecutive(1, open_wait_s=10.0))
    breaker = board.get("model:fake:hang")
    inner = HangingModel()
    model = BreakerChatModel(inner, board, clock=clock)

    task = asyncio.create_task(model.complete(REQUEST))
    await inner.started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.state is BreakerState.CLOSED
    assert breaker.window_calls == 0
