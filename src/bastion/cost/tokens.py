"""Sizing a request's input tokens before the call, erring high.

The figure sizes a budget reservation, so being low would let a run overspend while being high
only holds a little more money until the call settles at its real usage. `estimate_input_tokens`
is the one function the Cost Controllers ask, and it has two sources:

* **The model's own count**, when the model that will answer has its tokenizer at hand (the
  embedded llama.cpp model: `bastion.models.local.LocalChatModel`), with no tokenizer downloaded
  at run time. Such a model is a `TokenCounter`; `MeteredChatModel` asks it before reserving
  (`with_token_count`, which looks through wrappers for one) and hands the controller a
  `CountedChatRequest`, the same request carrying its count. The estimate is that count plus
  `COUNT_MARGIN_TOKENS` and 1/`COUNT_MARGIN_DIVISOR` of it, for whatever the engine might add that
  the count did not see.
* **Otherwise the byte rule**, cheap and the same for every provider:

  - text: UTF-8 bytes / 3, rounded up (English averages about 4 characters a token; a CJK
    character is 3 bytes and about one token);
  - plus 4 tokens per message, for the role and the separators providers wrap messages in;
  - plus the JSON schema, when one is sent as ``response_format``, sized the same way from its
    compact JSON (providers count it as input).

A count that fails (the engine is closing, its listener did not answer) is logged and the byte
rule used: counting never stops a call.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Final, Protocol, runtime_checkable

from bastion.models.interface import ChatModel, ChatRequest

logger = logging.getLogger(__name__)

#: Bytes per token assumed for text (lower than any real tokenizer's average: errs high).
BYTES_PER_TOKEN: Final = 3
#: Tokens added per message for its role and framing.
TOKENS_PER_MESSAGE: Final = 4
#: Added to a tokenizer's count: a fixed few tokens, plus 1/`COUNT_MARGIN_DIVISOR` of the count.
COUNT_MARGIN_TOKENS: Final = 8
COUNT_MARGIN_DIVISOR: Final = 64
#: How many wrappers (``.wrapped``) `token_counter` looks through before giving up.
_MAX_WRAPPERS: Final = 16


@runtime_checkable
class TokenCounter(Protocol):
    """A model that can count a request's input tokens with its own tokenizer, before the call.

    The count is what the model will report as its input (prompt) tokens for `request`: the
    chat-templated prompt, with whatever its constrained decoding adds to it. None means it cannot
    count this time; it may raise, and the caller then estimates by the byte rule.
    """

    async def count_input_tokens(self, request: ChatRequest) -> int | None: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CountedChatRequest(ChatRequest):
    """A request with its input tokens counted by the model that will answer it."""

    counted_input_tokens: int
    #: The model that counted (``provider:model``), for logs.
    counted_by: str


def estimate_input_tokens(request: ChatRequest) -> int:
    """An upper estimate of the input tokens `request` will be billed for."""
    if isinstance(request, CountedChatRequest):
        counted = request.counted_input_tokens
        return counted + COUNT_MARGIN_TOKENS + _ceil_div(counted, COUNT_MARGIN_DIVISOR)
    return estimate_by_bytes(request)


def estimate_by_bytes(request: ChatRequest) -> int:
    """The byte rule (see the module docstring): for models whose tokenizer is not at hand."""
    text_bytes = sum(len(message.content.encode("utf-8")) for message in request.messages)
    tokens = _ceil_div(text_bytes, BYTES_PER_TOKEN) + TOKENS_PER_MESSAGE * len(request.messages)
    if request.json_schema is not None:
        schema = json.dumps(
            {"name": request.schema_name, "schema": request.json_schema},
            separators=(",", ":"),
            ensure_ascii=False,
            default=str,
        )
        tokens += _ceil_div(len(schema.encode("utf-8")), BYTES_PER_TOKEN)
    return tokens


def token_counter(model: ChatModel) -> TokenCounter | None:
    """The `TokenCounter` that answers for `model`: itself, or the model its wrappers wrap.

    Wrappers (breakers, rate limits, durable steps, a cascade's run) expose the model they call
    as ``wrapped``. A wrapper that may answer with one of several models (a fallback chain) has
    none, so its calls are estimated by the byte rule: one model's count could be low for another.
    """
    current: object = model
    for _ in range(_MAX_WRAPPERS):
        if isinstance(current, TokenCounter):
            return current
        current = getattr(current, "wrapped", None)
        if current is None:
            return None
    return None


async def with_token_count(model: ChatModel, request: ChatRequest) -> ChatRequest:
    """`request`, as a `CountedChatRequest` when `model` can count its input tokens; else as is.

    Never raises for a failed count (it is logged, and the byte rule sizes the reservation);
    cancellation goes on.
    """
    counter = token_counter(model)
    if counter is None:
        return request
    try:
        counted = await counter.count_input_tokens(request)
    except Exception as exc:
        logger.warning(
            "could not count the input tokens of a call to %s (%s: %s); estimating them from"
            " the request's size instead",
            model.name,
            type(exc).__name__,
            exc,
        )
        return request
    if counted is None or counted < 0:
        return request
    fields = {f.name: getattr(request, f.name) for f in dataclasses.fields(ChatRequest)}
    return CountedChatRequest(**fields, counted_input_tokens=counted, counted_by=model.name)


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
