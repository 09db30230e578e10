from __future__ import annotations

from typing import Any

from bastion.cost.tokens import estimate_input_tokens
from bastion.models.interface import ChatMessage, ChatRequest, as_messages


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
