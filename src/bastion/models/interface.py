"""The `ChatModel` protocol and the OpenAI-shaped request and response every model speaks.

One shape for every provider (hosted, local, scripted), so that a planner, a cost controller or a
wrapper (breaker, fallback) never cares which model is behind it. Provider errors are raised as the
`bastion.errors.ModelError` family, mapped at each provider's boundary and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Role = Literal["system", "user", "assistant"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatMessage:
    """One message of a conversation."""

    role: Role
    content: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """What a model is asked: messages, and optionally a JSON schema its answer must follow."""

    messages: tuple[ChatMessage, ...]
    #: A JSON schema the answer must validate against; sent as ``response_format`` (json_schema).
    json_schema: Mapping[str, Any] | None = None
    schema_name: str = "plan"
    #: Upper bound on output tokens; sent to the provider so that a cost bound is real.
    max_tokens: int = 1024
    temperature: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    """Tokens a call used, as reported by the provider (or counted, for local models)."""

    input_tokens: int = 0
    output_tokens: int = 0
    #: The part of `input_tokens` the provider served from its prompt cache (billed lower).
    cached_input_tokens: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatResponse:
    """A model's answer."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    #: ``"stop"`` for a finished answer; ``"length"`` when cut at ``max_tokens``.
    finish_reason: str = "stop"
    latency_s: float = 0.0
    #: Set by `bastion.models.fallback.FallbackChatModel` when a fallback answered: the models
    #: that were down, and why, in the order tried (empty when the primary answered).
    fallback_from: tuple[str, ...] = ()


class ChatModel(Protocol):
    """A chat model. `complete` either returns a `ChatResponse` or raises a `ModelError`.

    Implementations never retry on their own (the Recovery Handler owns retries) and never raise
    anything but `bastion.errors.ModelError` subclasses for provider failures.
    """

    @property
    def name(self) -> str:
        """The model's name as configured, ``provider:model`` (e.g. ``openai:gpt-4o-mini``)."""
        ...

    async def complete(self, request: ChatRequest) -> ChatResponse: ...


def as_messages(pairs: Sequence[tuple[Role, str]]) -> tuple[ChatMessage, ...]:
    """Build a message tuple from ``(role, content)`` pairs."""
    return tuple(ChatMessage(role=role, content=content) for role, content in pairs)
