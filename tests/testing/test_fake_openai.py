from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from bastion.models.interface import Usage
from bastion.testing.fake_openai import FakeOpenAIServer, refused_base_url, refused_port

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as running:
        yield running


@pytest.fixture
def http(server: FakeOpenAIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=5) as client:
        yield client


def test_ok_speaks_the_chat_completions_format_and_records_the_request(
    server: FakeOpenAIServer, http: httpx.Client
) -> None:
    server.ok("hello", usage=Usage(input_tokens=7, output_tokens=2), finish_reason="length")

    response = http.post("/chat/completions", json=BODY, headers={"Authorization": "Bearer k"})

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hello",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}
    assert server.requests == [BODY]
    assert server.request_headers[0]["authorization"] == "Bearer k"


def test_ok_without_usage_leaves_it_out(server: FakeOpenAIServer, http: httpx.Client) -> None:
    server.ok("x", usage=None)

    assert "usage" not in http.post("/chat/completions", json=BODY).json()


def test_replies_are_served_in_order_and_counted(
    server: FakeOpenAIServer, http: httpx.Client
) -> None:
    server.ok("one").error(503)

    assert server.pending == 2
    assert http.post("/chat/completions", json=BODY).status_code == 200
    assert http.post("/chat/completions", json=BODY).status_code == 503
    assert server.pending == 0
    assert len(server.requests) == 2


def test_error_sends_status_headers_and_an_openai_error_body(
    server: FakeOpenAIServer, http: httpx.Client
) -> None:
    server.error(429, headers={"Retry-After": "2"})

    response = http.post("/chat/completions", json=BODY)

    assert response.status_code == 429
    assert response.headers["retry-after"] == "2"
    assert response.json() == {"error": {"message": "fake error 429", "type": "fake", "code": None}}


@pytest.mark.parametrize(
    ("body", "expected"),
    [({"error": {"message": "custom"}}, b'{"error": {"message": "custom"}}'), (b"raw!", b"raw!")],
)
def test_error_sends_a_given_body(
    server: FakeOpenAIServer, http: httpx.Client, body: dict[str, Any] | bytes, expected: bytes
) -> None:
    server.error(500, body)

    assert http.post("/chat/completions", json=BODY).content == expected


def test_malformed_sends_raw_bytes_with_a_200(server: FakeOpenAIServer, http: httpx.Client) -> None:
    server.malformed(b"{broken", content_type="text/plain")

    response = http.post("/chat/completions", json=BODY)

    assert response.status_code == 200
    assert response.content == b"{broken"
    assert response.headers["content-type"] == "text/plain"


def test_hang_answers_late(server: FakeOpenAIServer, http: httpx.Client) -> None:
    server.hang(0.01, then="late")

    response = http.post("/chat/completions", json=BODY)

    assert response.json()["choices"][0]["message"]["content"] == "late"


@pytest.mark.timeout(10)
def test_stop_cuts_a_hang_short() -> None:
    server = FakeOpenAIServer()
    server.start()
    try:
        server.hang(600)
        with (
            httpx.Client(base_url=server.base_url, timeout=0.05) as client,
            pytest.raises(httpx.ReadTimeout),
        ):
            client.post("/chat/completions", json=BODY)
    finally:
        server.stop()  # returns at once: the hanging handler is woken, not waited out

    assert len(server.requests) == 1


def test_a_request_with_nothing_queued_gets_a_500_saying_so(
    server: FakeOpenAIServer, http: httpx.Client
) -> None:
    response = http.post("/chat/completions", json=BODY)

    assert response.status_code == 500
    assert response.json()["error"]["message"] == (
        "FakeOpenAIServer: no reply queued for request #1"
    )


def test_other_paths_are_404_and_not_recorded(server: FakeOpenAIServer, http: httpx.Client) -> None:
    server.ok("unused")

    response = http.post("/embeddings", json=BODY)

    assert response.status_code == 404
    assert server.requests == []
    assert server.pending == 1


@pytest.mark.parametrize("content", [b"{nope", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_a_400(
    server: FakeOpenAIServer, http: httpx.Client, content: bytes
) -> None:
    response = http.post(
        "/chat/completions", content=content, headers={"content-type": "application/json"}
    )

    assert response.status_code == 400
    assert server.requests == []


async def test_async_context_manager_serves_and_stops() -> None:
    async with FakeOpenAIServer() as server:
        server.ok("async")
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            response = await client.post("/chat/completions", json=BODY)
        url = server.base_url

    assert response.json()["choices"][0]["message"]["content"] == "async"
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.post(f"{url}/chat/completions", json=BODY)


def test_base_url_needs_a_running_server() -> None:
    with pytest.raises(RuntimeError, match="not running"):
        _ = FakeOpenAIServer().base_url


def test_start_twice_is_refused_and_stop_is_idempotent() -> None:
    server = FakeOpenAIServer()
    server.start()
    try:
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    finally:
        server.stop()
    server.stop()


def test_server_thread_is_gone_after_stop() -> None:
    before = set(threading.enumerate())
    with FakeOpenAIServer():
        pass

    assert not [t for t in set(threading.enumerate()) - before if t.name == "fake-openai"]


def test_refused_port_refuses_connections() -> None:
    with httpx.Client() as client, pytest.raises(httpx.ConnectError):
        client.get(f"http://127.0.0.1:{refused_port()}/")
    assert refused_base_url().startswith("http://127.0.0.1:")
    assert refused_base_url().endswith("/v1")
