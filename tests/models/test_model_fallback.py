from __future__ import annotations

import pytest

from bastion.errors import (
    CircuitOpen,
    ConfigError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.fallback import FallbackChatModel, falls_over
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, as_messages

REQUEST = ChatRequest(messages=as_messages([("user", "hi")]))


class Model(ChatModel):
    def __init__(self, name: str, *script: BaseException | str) -> None:
        self._name = name
        self.script = list(script)
        self.calls = 0
        self.closed = False

    @property
    def name(self) -> str:
        return self._name

    async def complete(self, request: ChatRequest) -> ChatResponse:
        self.calls += 1
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return ChatResponse(text=step, model=self._name)

    async def aclose(self) -> None:
        self.closed = True


@pytest.mark.parametrize(
    "error",
    [
        CircuitOpen("model:openai:a", 5.0),
        ModelUnavailable("503"),
        ModelTimeout("slow"),
        ModelRateLimited("429", retry_after_s=2),
    ],
)
async def test_a_down_primary_falls_over_and_the_answer_names_who_answered(
    error: Exception,
) -> None:
    primary, local = Model("openai:a", error), Model("local:q", "from local")
    chain = FallbackChatModel(primary, local)

    response = await chain.complete(REQUEST)

    assert response.text == "from local"
    assert response.model == "local:q"
    assert len(response.fallback_from) == 1
    assert response.fallback_from[0].startswith("openai:a (")
    assert chain.name == "openai:a"


async def test_a_healthy_primary_answers_with_no_fallback_noted() -> None:
    chain = FallbackChatModel(Model("a", "hi"), Model("b"))

    response = await chain.complete(REQUEST)

    assert (response.model, response.fallback_from) == ("a", ())


@pytest.mark.parametrize("error", [ModelBadRequest("schema"), ModelRefused("policy")])
async def test_our_own_mistakes_are_not_hidden_by_a_fallback(error: ModelError) -> None:
    fallback = Model("b", "never")
    chain = FallbackChatModel(Model("a", error), fallback)

    with pytest.raises(type(error)):
        await chain.complete(REQUEST)
    assert fallback.calls == 0


async def test_every_model_down_raises_the_last_error_for_recovery_to_retry() -> None:
    last = ModelUnavailable("local down too")
    chain = FallbackChatModel(
        Model("a", ModelTimeout("x")), Model("b", CircuitOpen("b", 1.0)), Model("c", last)
    )

    with pytest.raises(ModelUnavailable) as info:
        await chain.complete(REQUEST)
    assert info.value is last


async def test_the_chain_closes_every_model_and_needs_a_fallback() -> None:
    a, b = Model("a"), Model("b")
    await FallbackChatModel(a, b).aclose()

    assert a.closed
    assert b.closed
    with pytest.raises(ConfigError, match="at least one fallback"):
        FallbackChatModel(a)
    assert falls_over(CircuitOpen("x", 0.0))
    assert not falls_over(RuntimeError("bug"))
