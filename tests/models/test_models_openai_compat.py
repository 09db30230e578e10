"""`OpenAIChatModel` driven through the real `openai` SDK against a real (fake) HTTP server."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from bastion.errors import (
    ConfigError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.interface import ChatRequest, Usage, as_messages
from bastion.models.openai_compat import PLACEHOLDER_API_KEY, OpenAIChatModel
from bastion.testing.clock import FakeClock
from bastion.testing.fake_openai import FakeOpenAIServer, refused_base_url

REQUEST = ChatRequest(messages=as_messages([("system", "be brief"), ("user", "hello")]))
SCHEMA = {"type": "object", "properties": {"steps": {"type": "array"}}, "required": ["steps"]}


def model_for(
    server: FakeOpenAIServer,
    *,
    model: str = "gpt-test",
    api_key: str | None = "sk-test",
    timeout_s: float = 5.0,
    client: openai.AsyncOpenAI | None = None,
    strict_schema: bool = False,
) -> OpenAIChatModel:
    return OpenAIChatModel(
        model=model,
        base_url=server.base_url,
        api_key=api_key,
        clock=FakeClock(),
        timeout_s=timeout_s,
        client=client,
        strict_schema=strict_schema,
    )


async def test_success_returns_text_usage_finish_reason_and_latency(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok("hi there", usage=Usage(input_tokens=12, output_tokens=3))

    response = await gpt.complete(REQUEST)

    assert response.text == "hi there"
    assert response.model == "openai:gpt-test"
    assert response.usage == Usage(input_tokens=12, output_tokens=3)
    assert response.finish_reason == "stop"
    assert response.latency_s == 0.25  # the ticking clock moves 0.25 s per reading


async def test_sends_model_messages_max_tokens_and_temperature(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok("ok")
    request = ChatRequest(
        messages=as_messages([("system", "s"), ("user", "u"), ("assistant", "a")]),
        max_tokens=77,
        temperature=0.3,
    )

    await gpt.complete(request)

    [sent] = fake_openai.requests
    assert sent["model"] == "gpt-test"
    assert sent["messages"] == [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"},
    ]
    assert sent["max_tokens"] == 77
    assert sent["temperature"] == 0.3
    assert "response_format" not in sent
    assert fake_openai.request_headers[0]["authorization"] == "Bearer sk-test"


async def test_json_schema_is_sent_as_response_format(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok('{"steps": []}')

    await gpt.complete(ChatRequest(messages=REQUEST.messages, json_schema=SCHEMA))

    assert fake_openai.requests[0]["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "plan", "schema": SCHEMA, "strict": False},
    }


async def test_strict_schema_and_schema_name_are_sent(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.ok("{}")
    async with model_for(fake_openai, strict_schema=True) as model:
        await model.complete(
            ChatRequest(messages=REQUEST.messages, json_schema=SCHEMA, schema_name="answer")
        )

    json_schema = fake_openai.requests[0]["response_format"]["json_schema"]
    assert json_schema["strict"] is True
    assert json_schema["name"] == "answer"


async def test_missing_usage_counts_zero_tokens(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok("ok", usage=None)

    response = await gpt.complete(REQUEST)

    assert response.usage == Usage(input_tokens=0, output_tokens=0)


async def test_cached_prompt_tokens_are_read_from_the_usage_details(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok("hi", usage=Usage(input_tokens=12, output_tokens=3, cached_input_tokens=8))
    fake_openai.ok("hi", usage=Usage(input_tokens=12, output_tokens=3))  # no details at all

    cached = await gpt.complete(REQUEST)
    uncached = await gpt.complete(REQUEST)

    assert cached.usage == Usage(input_tokens=12, output_tokens=3, cached_input_tokens=8)
    assert uncached.usage == Usage(input_tokens=12, output_tokens=3, cached_input_tokens=0)


async def test_odd_but_usable_fields_are_read_leniently(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    body = {
        "choices": [{"message": {"role": "assistant", "content": "hi"}, "finish_reason": None}],
        "usage": {
            "prompt_tokens": "many",
            "completion_tokens": 4,
            "prompt_tokens_details": {"cached_tokens": None},
        },
    }
    fake_openai.malformed(json.dumps(body).encode())

    response = await gpt.complete(REQUEST)

    assert response.text == "hi"
    assert response.finish_reason == "stop"
    assert response.usage == Usage(input_tokens=0, output_tokens=4)


async def test_length_finish_reason_is_passed_through(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok("cut sho", finish_reason="length")

    response = await gpt.complete(REQUEST)

    assert response.finish_reason == "length"
    assert response.text == "cut sho"


async def test_429_with_retry_after_is_rate_limited_after_one_request(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.error(429, headers={"Retry-After": "2"})

    with pytest.raises(ModelRateLimited) as caught:
        await gpt.complete(REQUEST)

    assert caught.value.retry_after_s == 2
    assert caught.value.model == "openai:gpt-test"
    assert "429" in str(caught.value)
    assert "retry after 2 s" in str(caught.value)
    assert isinstance(caught.value.__cause__, openai.RateLimitError)
    assert len(fake_openai.requests) == 1  # the SDK's own retries are off


async def test_429_with_retry_after_ms_wins(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.error(429, headers={"Retry-After": "9", "retry-after-ms": "1500"})

    with pytest.raises(ModelRateLimited) as caught:
        await gpt.complete(REQUEST)

    assert caught.value.retry_after_s == 1.5


async def test_429_without_hint_has_no_retry_after(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.error(429)

    with pytest.raises(ModelRateLimited) as caught:
        await gpt.complete(REQUEST)

    assert caught.value.retry_after_s is None


async def test_429_out_of_quota_is_refused_not_rate_limited(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    quota = {"error": {"message": "You exceeded your quota", "code": "insufficient_quota"}}
    fake_openai.error(429, quota)

    with pytest.raises(ModelRefused, match="out of quota"):
        await gpt.complete(REQUEST)


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unavailable_after_one_request(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel, status: int
) -> None:
    fake_openai.error(status)

    with pytest.raises(ModelUnavailable) as caught:
        await gpt.complete(REQUEST)

    assert f"HTTP {status}" in str(caught.value)
    assert len(fake_openai.requests) == 1


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, ModelBadRequest),
        (404, ModelBadRequest),
        (409, ModelBadRequest),
        (413, ModelBadRequest),
        (422, ModelBadRequest),
        (401, ModelRefused),
        (402, ModelRefused),
        (403, ModelRefused),
        (408, ModelTimeout),
    ],
)
async def test_4xx_statuses_map_onto_the_taxonomy(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel, status: int, expected: type[ModelError]
) -> None:
    body = {"error": {"message": "the provider's reason", "type": "x", "code": "some_code"}}
    fake_openai.error(status, body)

    with pytest.raises(expected) as caught:
        await gpt.complete(REQUEST)

    assert type(caught.value) is expected
    assert "openai:gpt-test" in str(caught.value)
    assert "the provider's reason [code some_code]" in str(caught.value)
    assert len(fake_openai.requests) == 1


async def test_401_message_says_to_check_the_key(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.error(401)

    with pytest.raises(ModelRefused, match="Check the API key"):
        await gpt.complete(REQUEST)


@pytest.mark.parametrize("code", ["content_filter", "content_policy_violation"])
async def test_400_content_policy_is_refused(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel, code: str
) -> None:
    fake_openai.error(400, {"error": {"message": "flagged", "code": code}})

    with pytest.raises(ModelRefused, match="usage policy"):
        await gpt.complete(REQUEST)


async def test_hanging_server_times_out(fake_openai: FakeOpenAIServer) -> None:
    fake_openai.hang(5)

    async with model_for(fake_openai, timeout_s=0.05) as model:
        with pytest.raises(ModelTimeout) as caught:
            await model.complete(REQUEST)

    assert isinstance(caught.value.__cause__, openai.APITimeoutError)
    assert "0.05 s" in str(caught.value)
    assert len(fake_openai.requests) == 1


async def test_connection_refused_is_unavailable() -> None:
    async with OpenAIChatModel(
        model="gpt-test", base_url=refused_base_url(), api_key="k", clock=FakeClock()
    ) as model:
        with pytest.raises(ModelUnavailable, match="could not connect") as caught:
            await model.complete(REQUEST)

    assert isinstance(caught.value.__cause__, openai.APIConnectionError)


@pytest.mark.parametrize(
    ("raw", "content_type", "problem"),
    [
        # A JSON content type over a body that is not JSON: the SDK's decoder raises.
        (b"{not json", "application/json", "not valid JSON"),
        (b"\xff\xfe\xfa", "application/json", "not valid JSON"),
        # Not JSON and not labelled so: the SDK hands back the text.
        (b"<html>oops</html>", "text/html", "expected a chat completion, got str"),
        (json.dumps({"id": "x", "choices": []}).encode(), "application/json", "no choices"),
        (json.dumps({"id": "x"}).encode(), "application/json", "no choices"),
        (json.dumps({"choices": ["x"]}).encode(), "application/json", "has no message"),
        (json.dumps([1, 2]).encode(), "application/json", "expected a chat completion"),
    ],
)
async def test_malformed_bodies_are_unavailable(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel, raw: bytes, content_type: str, problem: str
) -> None:
    fake_openai.malformed(raw, content_type=content_type)

    with pytest.raises(ModelUnavailable, match="malformed response") as caught:
        await gpt.complete(REQUEST)

    assert problem in str(caught.value)


async def test_message_without_content_is_unavailable(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok(None)

    with pytest.raises(ModelUnavailable, match="no content"):
        await gpt.complete(REQUEST)


async def test_refusal_is_refused(fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel) -> None:
    fake_openai.ok(None, refusal="I can't help with that")

    with pytest.raises(ModelRefused, match="I can't help with that"):
        await gpt.complete(REQUEST)


async def test_content_filter_finish_is_refused(
    fake_openai: FakeOpenAIServer, gpt: OpenAIChatModel
) -> None:
    fake_openai.ok("", finish_reason="content_filter")

    with pytest.raises(ModelRefused, match="content filter"):
        await gpt.complete(REQUEST)


async def test_no_key_anywhere_sends_a_placeholder(
    fake_openai: FakeOpenAIServer, no_openai_env: None
) -> None:
    fake_openai.ok("ok")

    async with model_for(fake_openai, api_key=None) as model:
        await model.complete(REQUEST)

    assert fake_openai.request_headers[0]["authorization"] == f"Bearer {PLACEHOLDER_API_KEY}"


async def test_no_key_given_uses_the_sdk_default(
    fake_openai: FakeOpenAIServer, no_openai_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    fake_openai.ok("ok")

    async with model_for(fake_openai, api_key=None) as model:
        await model.complete(REQUEST)

    assert fake_openai.request_headers[0]["authorization"] == "Bearer sk-from-env"


async def test_injected_client_gets_retries_off_and_is_not_closed(
    fake_openai: FakeOpenAIServer,
) -> None:
    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", max_retries=3)
    fake_openai.error(500)
    try:
        model = model_for(fake_openai, client=client)
        with pytest.raises(ModelUnavailable):
            await model.complete(REQUEST)
        await model.aclose()

        assert len(fake_openai.requests) == 1
        assert not client.is_closed()
    finally:
        await client.close()


async def test_injected_client_gets_the_timeout(fake_openai: FakeOpenAIServer) -> None:
    client = openai.AsyncOpenAI(base_url=fake_openai.base_url, api_key="k", timeout=30)
    fake_openai.hang(5)
    try:
        model = model_for(fake_openai, client=client, timeout_s=0.05)
        with pytest.raises(ModelTimeout):
            await model.complete(REQUEST)
    finally:
        await client.close()


async def test_aclose_closes_an_own_client(fake_openai: FakeOpenAIServer) -> None:
    model = model_for(fake_openai)
    await model.aclose()

    with pytest.raises(ModelUnavailable):
        await model.complete(REQUEST)
    assert fake_openai.requests == []


def test_name_and_endpoint(fake_openai: FakeOpenAIServer) -> None:
    model = model_for(fake_openai, model="gpt-4o-mini")

    assert model.name == "openai:gpt-4o-mini"
    assert model.endpoint == fake_openai.base_url


@pytest.mark.parametrize(
    ("overrides", "message"),
    [({"model": " "}, "needs a model id"), ({"timeout_s": 0}, "must be positive")],
)
def test_bad_configuration_is_a_config_error(
    fake_openai: FakeOpenAIServer, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        model_for(fake_openai, **overrides)
