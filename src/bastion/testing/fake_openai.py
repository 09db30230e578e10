"""`FakeOpenAIServer`: a real HTTP server speaking OpenAI's chat-completions wire format.

Tests of `bastion.models.openai_compat` drive the real `openai` SDK over a real socket against it,
so the SDK's own parsing, status handling and timeouts are what gets tested, not a mock of them.
Each request takes the next scripted reply (`ok`, `error`, `malformed`, `hang`) and its JSON body
is recorded (`requests`) so a test can check exactly what was sent, and how many times.

Stdlib only, so that shipping it costs nothing: `http.server.ThreadingHTTPServer` on 127.0.0.1,
port chosen by the OS, served from a daemon thread. Responses are HTTP/1.0 (one request per
connection), so no handler thread lingers on an idle keep-alive socket at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Self

from bastion.models.interface import Usage

_CHAT_PATH: Final = "/v1/chat/completions"
_DEFAULT_USAGE: Final = Usage(input_tokens=10, output_tokens=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class _Reply:
    """An HTTP answer, ready to send."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"
    #: Seconds to wait before answering (cut short when the server stops).
    delay_s: float = 0.0


def _json_bytes(value: object) -> bytes:
    return json.dumps(value).encode()


class FakeOpenAIServer:
    """A scriptable OpenAI-compatible server for tests.

    Use it as a context manager (``with`` or ``async with``); `base_url` is valid inside. Queue one
    reply per expected request; a request with nothing queued gets a 500 whose message says so.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._replies: deque[_Reply] = deque()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        #: Each JSON body received on the chat-completions path, in order.
        self.requests: list[dict[str, Any]] = []
        #: The headers of each of those requests (lower-cased names), in the same order.
        self.request_headers: list[dict[str, str]] = []

    # -- scripting -----------------------------------------------------------------------------

    def ok(
        self,
        content: str | None,
        *,
        usage: Usage | None = _DEFAULT_USAGE,
        finish_reason: str = "stop",
        refusal: str | None = None,
    ) -> Self:
        """Queue a successful completion; ``usage=None`` leaves usage out of the body."""
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 0,
            "model": "fake-model",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": refusal},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
        }
        if usage is not None:
            body["usage"] = {
                "prompt_tokens": usage.input_tokens,
                "completion_tokens": usage.output_tokens,
                "total_tokens": usage.input_tokens + usage.output_tokens,
            }
            if usage.cached_input_tokens:
                body["usage"]["prompt_tokens_details"] = {
                    "cached_tokens": usage.cached_input_tokens
                }
        return self._queue(_Reply(status=200, body=_json_bytes(body)))

    def error(
        self,
        status: int,
        body: Mapping[str, Any] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Self:
        """Queue an error answer; the default body is OpenAI's ``{"error": {...}}`` shape."""
        if body is None:
            body = {"error": {"message": f"fake error {status}", "type": "fake", "code": None}}
        raw = body if isinstance(body, bytes) else _json_bytes(dict(body))
        return self._queue(_Reply(status=status, body=raw, headers=dict(headers or {})))

    def malformed(self, raw: bytes, *, content_type: str = "application/json") -> Self:
        """Queue a 200 whose body is `raw` as is (not JSON, or JSON of the wrong shape)."""
        return self._queue(_Reply(status=200, body=raw, content_type=content_type))

    def hang(self, seconds: float, *, then: str = "too late") -> Self:
        """Queue a reply sent only after `seconds` (sooner if the server stops): for timeouts."""
        late = _json_bytes(
            {
                "id": "chatcmpl-late",
                "object": "chat.completion",
                "created": 0,
                "model": "fake-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": then},
                        "finish_reason": "stop",
                    }
                ],
            }
        )
        return self._queue(_Reply(status=200, body=late, delay_s=seconds))

    @property
    def pending(self) -> int:
        """How many queued replies no request has taken yet."""
        with self._lock:
            return len(self._replies)

    def _queue(self, reply: _Reply) -> Self:
        with self._lock:
            self._replies.append(reply)
        return self

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, for ``AsyncOpenAI(base_url=...)``."""
        if self._server is None:
            raise RuntimeError("FakeOpenAIServer is not running: use it inside `with`")
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def start(self) -> None:
        """Bind a free port and serve in a daemon thread."""
        if self._server is not None:
            raise RuntimeError("FakeOpenAIServer is already running")
        self._stopping.clear()
        server = _Server(("127.0.0.1", 0), _Handler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-openai",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, wake any hanging reply, wait for handler threads, close the socket."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()
        server.shutdown()
        # ThreadingHTTPServer joins its handler threads here (block_on_close).
        server.server_close()
        thread.join()
        self._server = self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # Off the loop: shutting down waits for the serving thread and its handlers.
        await asyncio.to_thread(self.stop)

    # -- serving (called from handler threads) --------------------------------------------------

    def _take(self, body: dict[str, Any], headers: dict[str, str]) -> _Reply:
        with self._lock:
            self.requests.append(body)
            self.request_headers.append(headers)
            if self._replies:
                return self._replies.popleft()
            number = len(self.requests)
        message = f"FakeOpenAIServer: no reply queued for request #{number}"
        return _Reply(status=500, body=_json_bytes({"error": {"message": message}}))

    def _wait(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Server(ThreadingHTTPServer):
    owner: FakeOpenAIServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        if self.path.rstrip("/") != _CHAT_PATH:
            self._send(_error(404, f"FakeOpenAIServer serves only POST {_CHAT_PATH}"))
            return
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            self._send(_error(400, "request body is not JSON"))
            return
        if not isinstance(body, dict):
            self._send(_error(400, "request body is not a JSON object"))
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self.server.owner._take(body, headers)
        if reply.delay_s > 0:
            self.server.owner._wait(reply.delay_s)
        self._send(reply)

    def _send(self, reply: _Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            # The client gave up (its timeout fired while we hung): nobody is listening.
            pass

    def log_message(self, format: str, *args: Any) -> None:
        """Keep test output quiet; the recorded requests say what happened."""


def _error(status: int, message: str) -> _Reply:
    return _Reply(status=status, body=_json_bytes({"error": {"message": message}}))


def refused_port() -> int:
    """A local port nothing listens on (bound, read, closed), for connection-refused tests."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def refused_base_url() -> str:
    """A ``/v1`` base URL on a `refused_port`."""
    return f"http://127.0.0.1:{refused_port()}/v1"
