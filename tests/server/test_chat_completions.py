"""The OpenAI-compatible endpoint, with the official `openai` SDK as the client."""

from __future__ import annotations

import httpx
import openai
import pytest


def sdk(served, who: str = "c1") -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{served.url}/v1", api_key=served.keys[who], max_retries=0)


def test_the_sdk_gets_a_completion_from_the_support_agent(support):
    client = sdk(support)
    completion = client.chat.completions.create(
        model="support",
        messages=[
            {"role": "system", "content": "ignored: the app has its own prompt"},
            {"role": "user", "content": "Where is my order A1001?"},
        ],
        user="sdk-session-1",
    )
    assert completion.object == "chat.completion"
    assert completion.model == "support"
    answer = completion.choices[0].message.content
    assert answer is not None
    assert "A1001" in answer
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.total_tokens == (
        completion.usage.prompt_tokens + completion.usage.completion_tokens
    )
    run_id = completion.id.removeprefix("chatcmpl-")
    with support.client("c1") as http:
        run = http.get(f"/v1/runs/{run_id}").json()
    assert run["session_id"] == "sdk-session-1"
    assert run["request"] == "Where is my order A1001?"
    assert run["answer"] == answer


def test_the_sdk_gets_a_stream_of_chunks_with_usage(support):
    client = sdk(support)
    stream = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": "How do I reset my password?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "password" in text.lower()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.prompt_tokens > 0
    assert {c.id for c in chunks} == {chunks[0].id}


def test_the_session_header_wins_over_the_user_field(support):
    with support.client("c1") as http:
        response = http.post(
            "/v1/chat/completions",
            json={
                "model": "support",
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "text", "text": "How do I reset my password?"}],
                    }
                ],
                "user": "from-user-field",
            },
            headers={"X-Session-Id": "from-header"},
        )
        assert response.status_code == 200, response.text
        run = http.get(f"/v1/runs/{response.json()['bastion']['run_id']}").json()
    assert run["session_id"] == "from-header"


def test_an_unknown_model_is_an_sdk_not_found_error(support):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(support).chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert "support" in str(caught.value)


def test_a_bad_key_is_an_sdk_authentication_error(support):
    client = openai.OpenAI(base_url=f"{support.url}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "hi"}]
        )


def test_no_user_message_is_a_422(support):
    with support.client("c1") as http:
        response = http.post(
            "/v1/chat/completions",
            json={"model": "support", "messages": [{"role": "system", "content": "hi"}]},
        )
    assert response.status_code == 422
    assert "user message" in response.json()["error"]["message"]


def test_models_lists_the_served_app(support):
    models = sdk(support).models.list()
    assert [m.id for m in models] == ["support"]


def test_chat_without_a_key_is_401(support):
    response = httpx.post(
        f"{support.url}/v1/chat/completions",
        json={"model": "support", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert response.status_code == 401
