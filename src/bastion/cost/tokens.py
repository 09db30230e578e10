"""Estimating a request's input tokens before the call, erring high.

The estimate sizes a budget reservation, so being low would let a run overspend while being high
only holds a little more money until the call settles at its real usage. No tokenizer is loaded:
the count must be cheap, and the same for every provider. The rule:

* text: UTF-8 bytes / 3, rounded up (English averages about 4 characters a token; a CJK
  character is 3 bytes and about one token);
* plus 4 tokens per message, for the role and the separators providers wrap messages in;
* plus the JSON schema, when one is sent as ``response_format``, sized the same way from its
  compact JSON (providers count it as input).
"""

from __future__ import annotations

import json

from bastion.models.interface import ChatRequest

#: Bytes per token assumed for text (lower than any real tokenizer's average: errs high).
BYTES_PER_TOKEN = 3
#: Tokens added per message for its role and framing.
TOKENS_PER_MESSAGE = 4


def estimate_input_tokens(request: ChatRequest) -> int:
    """An upper estimate of the input tokens `request` will be billed for."""
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


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)
