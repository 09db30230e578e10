from __future__ import annotations

import pytest

from bastion.errors import ModelBadRequest, ModelRateLimited
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, as_messages
from bastion.models.rate_limited import RateLimitedChatModel, estimate_tokens, provider_of
from bastion.resilience.limits import Limits
from bastion.resilience.rate_limit import InProcessLimiter
from bastion.settings import RateLimitSettings
from bastion.testing.clock import FakeClock

REQUEST = ChatRequest(messages=as_messages([("user", "x" * 40)]), max_tokens=90)


class Model(ChatModel):
    def __init__(self) -> None:
        self.calls = 0

    @property
    def name(self) -> str:
        return "openai:m"

    endpoint = "http://127.0.0.1:1/v1"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        return ChatResponse(text="ok", model=self.name)


def make(clock: FakeClock, **settings: object) -> tuple[RateLimitedChatModel, Model]:
    limits = Limits(
        limiter=InProcessLimiter(clock=clock),
        settings=RateLimitSettings(**settings),  # type: ignore[arg-type]
        clock=clock,
    )
    inner = Model()
    return RateLimitedChatModel(inner, limits), inner


def test_the_estimate_is_prompt_plus_output_cap() -> None:
    assert estimate_tokens(REQUEST) == 40 // 4 + 1 + 90


def test_the_provider_is_the_endpoint_else_the_name_prefix() -> None:
    assert provider_of(Model()) == "http://127.0.0.1:1/v1"

    class Plain(Model):
        endpoint = ""

    assert provider_of(Plain()) == "openai"


async def test_over_the_provider_limit_is_a_rate_limit_with_the_exact_wait_and_no_call() -> None:
    clock = FakeClock()
    model, inner = make(clock, provider_requests_per_min=30, provider_request_burst=1)
    await model.complete(REQUEST)

    with pytest.raises(ModelRateLimited) as info:
        await model.complete(REQUEST)

    assert info.value.retry_after_s == pytest.approx(2.0)
    assert "rate limited, retry after 2.000s" in str(info.value)
    assert inner.calls == 1
    clock.advance(2.0)
    await model.complete(REQUEST)
    assert inner.calls == 2


async def test_a_call_bigger_than_the_token_burst_is_a_bad_request() -> None:
    model, inner = make(FakeClock(), provider_tokens_per_min=100, provider_token_burst=50)

    with pytest.raises(ModelBadRequest, match="can never pass"):
        await model.complete(REQUEST)
    assert inner.calls == 0
    assert model.name == "openai:m"
