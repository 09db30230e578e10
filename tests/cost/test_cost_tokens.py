from __future__ import annotations

import logging
from typing import Any

import pytest

from bastion.cost.cascade import Cascade
from bastion.cost.tokens import (
    CountedChatRequest,
    estimate_by_bytes,
    estimate_input_tokens,
    token_counter,
    with_token_count,
)
from bastion.messages import AgentRequest
from bastion.models.fallback import FallbackChatModel
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest, ChatResponse, as_messages
from bastion.models.rate_limited import RateLimitedChatModel
from bastion.resilience.limits import Limits
from bastion.resilience.rate_limit import InProcessLimiter
from bastion.settings import RateLimitSettings
from bastion.testing.clock import FakeClock


def req(*contents: str, schema: dict[str, Any] | None = None) -> ChatRequest:
    return ChatRequest(
        messages=tuple(ChatMessage(role="user", content=c) for c in contents), json_schema=schema
    )


def test_bytes_over_three_rounded_up_plus_four_per_message() -> None:
    assert estimate_input_tokens(req("abcdef")) == 2 + 4
    assert estimate_input_tokens(req("abcdefg")) == 3 + 4
    assert estimate_input_tokens(req("")) == 4


def test_bytes_are_summed_over_messages_before_rounding() -> None:
    request = ChatRequest(messages=as_messages([("system", "ab"), ("user", "cd")]))
    assert estimate_input_tokens(request) == 2 + 8


def test_counts_utf8_bytes_not_characters() -> None:
    assert estimate_input_tokens(req("ééé")) == 2 + 4  # 6 bytes
    assert estimate_input_tokens(req("日本語")) == 3 + 4  # 9 bytes


def test_no_messages_is_zero() -> None:
    assert estimate_input_tokens(ChatRequest(messages=())) == 0


def test_the_schema_sent_is_counted_too() -> None:
    schema = {"type": "object"}
    sent = '{"name":"plan","schema":{"type":"object"}}'
    assert len(sent) == 42
    assert estimate_input_tokens(req("abc", schema=schema)) == 1 + 4 + 14


def test_a_bigger_schema_costs_more() -> None:
    small = estimate_input_tokens(req("abc", schema={"type": "object"}))
    big = estimate_input_tokens(
        req("abc", schema={"type": "object", "properties": {f"f{i}": {} for i in range(50)}})
    )
    assert big > small + 100


def test_estimate_is_high_for_english_text() -> None:
    text = "Where is my order A1002? It was due last week and I have heard nothing since. " * 20
    # English runs near 4 characters a token; the estimate must not be below that.
    assert estimate_input_tokens(req(text)) >= len(text) / 4 + 4


# -- a model's own count -------------------------------------------------------------------------


class Plain:
    """A model with no tokenizer at hand."""

    def __init__(self, name: str = "openai:plain") -> None:
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ChatResponse(text="ok", model=self.name)


class Counting(Plain):
    """A model that counts with its own tokenizer: `count`, or raises `error`."""

    def __init__(
        self,
        name: str = "local:counting",
        *,
        count: int | None = 100,
        error: Exception | None = None,
    ) -> None:
        super().__init__(name)
        self.count = count
        self.error = error
        self.asked: list[ChatRequest] = []

    async def count_input_tokens(self, request: ChatRequest) -> int | None:
        self.asked.append(request)
        if self.error is not None:
            raise self.error
        return self.count


class Wrapper(Plain):
    """A cross-cutting wrapper, exposing what it wraps as ``wrapped`` (as breakers do)."""

    def __init__(self, wrapped: ChatModel) -> None:
        super().__init__(wrapped.name)
        self.wrapped = wrapped


PLAN_REQUEST = ChatRequest(
    messages=as_messages([("system", "You plan. " * 40), ("user", "Where is my order A1001?")]),
    json_schema={"type": "object", "properties": {"steps": {"type": "array"}}},
    max_tokens=300,
    temperature=0.0,
)


def test_a_counted_request_is_estimated_at_its_count_plus_a_margin() -> None:
    counted = CountedChatRequest(
        messages=PLAN_REQUEST.messages, counted_input_tokens=640, counted_by="local:x"
    )
    assert estimate_input_tokens(counted) == 640 + 8 + 10
    zero = CountedChatRequest(messages=(), counted_input_tokens=0, counted_by="local:x")
    assert estimate_input_tokens(zero) == 8


def test_a_request_nobody_counted_falls_back_to_the_byte_rule() -> None:
    assert estimate_input_tokens(PLAN_REQUEST) == estimate_by_bytes(PLAN_REQUEST)
    assert estimate_by_bytes(req("abcdef")) == 2 + 4


async def test_a_counting_model_returns_the_same_request_with_its_count() -> None:
    model = Counting(count=123)

    counted = await with_token_count(model, PLAN_REQUEST)

    assert isinstance(counted, CountedChatRequest)
    assert (counted.counted_input_tokens, counted.counted_by) == (123, "local:counting")
    for name in ("messages", "json_schema", "schema_name", "max_tokens", "temperature"):
        assert getattr(counted, name) == getattr(PLAN_REQUEST, name)
    assert model.asked == [PLAN_REQUEST]
    assert estimate_input_tokens(counted) == 123 + 8 + 2 < estimate_by_bytes(PLAN_REQUEST)


async def test_a_model_without_a_tokenizer_keeps_the_request_as_is() -> None:
    assert await with_token_count(Plain(), PLAN_REQUEST) is PLAN_REQUEST


@pytest.mark.parametrize("count", [None, -1])
async def test_a_counter_without_a_count_keeps_the_request_as_is(count: int | None) -> None:
    assert await with_token_count(Counting(count=count), PLAN_REQUEST) is PLAN_REQUEST


async def test_a_failed_count_is_logged_and_the_byte_rule_used(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = Counting(error=OSError("listener gone"))

    with caplog.at_level(logging.WARNING, logger="bastion.cost.tokens"):
        result = await with_token_count(model, PLAN_REQUEST)

    assert result is PLAN_REQUEST
    assert "OSError: listener gone" in caplog.records[-1].getMessage()
    assert "local:counting" in caplog.records[-1].getMessage()


def test_the_counter_is_found_through_wrappers() -> None:
    clock = FakeClock()
    limits = Limits(
        limiter=InProcessLimiter(clock=clock), settings=RateLimitSettings(), clock=clock
    )
    inner = Counting()

    assert token_counter(inner) is inner
    assert token_counter(Wrapper(RateLimitedChatModel(Wrapper(inner), limits))) is inner
    assert token_counter(Wrapper(Plain())) is None


def test_a_fallback_chain_is_not_counted_by_its_primary() -> None:
    # The answer may come from the fallback, whose tokenizer may count more.
    assert token_counter(FallbackChatModel(Counting(), Plain())) is None


def test_a_cascade_run_counts_with_its_current_rung() -> None:
    cheap, strong = Counting("local:cheap"), Counting("local:strong")
    cascade = Cascade([cheap, strong])
    run = cascade.for_run(AgentRequest(user_id="u", session_id="s", message="hi"))

    assert token_counter(cascade) is cheap
    assert token_counter(run) is cheap
    run.escalate("a bad plan")
    assert token_counter(run) is strong


def test_a_cycle_of_wrappers_ends() -> None:
    loop = Wrapper(Plain())
    loop.wrapped = loop
    assert token_counter(loop) is None
