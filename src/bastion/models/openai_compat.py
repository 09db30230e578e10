"""`OpenAIChatModel`: every OpenAI-compatible endpoint, through the official `openai` SDK.

One adapter serves OpenAI, vLLM, Ollama, llama.cpp's server and the rest, since they all speak the
chat-completions wire format. Two decisions live here and nowhere else:

* The SDK's own retries are off (``max_retries=0``): the Recovery Handler owns retries, so that one
  policy (backoff, Retry-After, retry budget, run deadline) governs every provider and a call is
  never silently repeated behind the breaker's back.
* Every `openai` exception is mapped onto the `bastion.errors.ModelError` family in one table,
  `OPENAI_ERROR_HANDLERS`, looked up along the exception's MRO (httpx's `map_httpcore_exceptions`
  style). A class the SDK adds later falls back to its parent's handler at run time, and the
  completeness test fails until somebody decides its mapping on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType, TracebackType
from typing import Final, Self, assert_never

import openai
from openai import AsyncOpenAI, omit
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionMessage, ChatCompletionMessageParam
from openai.types.chat.chat_completion import Choice
from openai.types.chat.completion_create_params import ResponseFormat

from bastion.clock import Clock
from bastion.errors import (
    ConfigError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.interface import ChatMessage, ChatModel, ChatRequest, ChatResponse, Usage
from bastion.resilience.retry_after import parse_retry_after

#: Sent when no key is configured: local OpenAI-compatible servers ignore it, and the SDK refuses
#: to build a client without one. OpenAI itself answers 401, which maps to `ModelRefused`.
PLACEHOLDER_API_KEY: Final = "bastion-no-key"

#: Error codes by which providers (OpenAI, Azure OpenAI) mark a prompt their policy refused.
_CONTENT_POLICY_CODES: Final = frozenset({"content_filter", "content_policy_violation"})


@dataclass(frozen=True, slots=True, kw_only=True)
class ErrorContext:
    """What a mapped error's message needs to know about the call that failed."""

    model: str
    endpoint: str
    timeout_s: float
    now: datetime

    @property
    def where(self) -> str:
        """The model and the endpoint, as messages name them."""
        return f"{self.model} at {self.endpoint}"


ErrorHandler = Callable[[openai.OpenAIError, ErrorContext], ModelError]


def _detail(exc: openai.OpenAIError) -> str:
    """The provider's own words about the failure, and its error code when it sent one."""
    if not isinstance(exc, openai.APIError):
        return str(exc)
    # For a status error the SDK keeps the body's "error" object, and its message repeats the
    # whole body; the object's own message reads better.
    body = exc.body
    said = body.get("message") if isinstance(body, dict) else None
    message = said if isinstance(said, str) and said else exc.message
    return f"{message} [code {exc.code}]" if exc.code else message


def _status(exc: openai.OpenAIError) -> str:
    return f"HTTP {exc.status_code}" if isinstance(exc, openai.APIStatusError) else "no status"


def _timeout(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    if isinstance(exc, openai.APIStatusError):  # a 408: the server, not us, stopped waiting
        return ModelTimeout(
            f"{ctx.where} timed out on its side ({_status(exc)}: {_detail(exc)}). Retry later.",
            model=ctx.model,
        )
    return ModelTimeout(
        f"{ctx.where} did not answer within {ctx.timeout_s:g} s. The server may be overloaded;"
        " retry later, or raise model.request_timeout_s if its answers are just slow.",
        model=ctx.model,
    )


def _connection(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    cause = f": {exc.__cause__}" if exc.__cause__ else ""
    return ModelUnavailable(
        f"could not connect to {ctx.where}{cause}. Check that the server is running and that"
        " the base URL (model.openai_base_url / OPENAI_BASE_URL) is right.",
        model=ctx.model,
    )


def _rate_limited(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    if isinstance(exc, openai.APIError) and exc.code == "insufficient_quota":
        # OpenAI sends its "out of credits" answer as a 429, but waiting will not fix it.
        return ModelRefused(
            f"{ctx.where} refused the call: the account is out of quota ({_status(exc)}:"
            f" {_detail(exc)}). Add credits or use another key; retrying will not help.",
            model=ctx.model,
        )
    retry_after_s = None
    if isinstance(exc, openai.APIStatusError):
        retry_after_s = parse_retry_after(exc.response.headers, now=ctx.now)
    when = f"retry after {retry_after_s:g} s" if retry_after_s is not None else "retry later"
    return ModelRateLimited(
        f"{ctx.where} is rate limiting us ({_status(exc)}: {_detail(exc)}); {when}, or lower the"
        " request rate or raise the provider's quota.",
        model=ctx.model,
        retry_after_s=retry_after_s,
    )


def _server_error(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelUnavailable(
        f"{ctx.where} failed ({_status(exc)}: {_detail(exc)}). The provider is having trouble;"
        " retry later or fall back to another model.",
        model=ctx.model,
    )


def _bad_request(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    if isinstance(exc, openai.APIError) and exc.code in _CONTENT_POLICY_CODES:
        return _content_refused(exc, ctx)
    return ModelBadRequest(
        f"{ctx.where} rejected the request ({_status(exc)}: {_detail(exc)}). Our request or the"
        " configuration is wrong (model id, JSON schema, max_tokens); it will not be retried.",
        model=ctx.model,
    )


def _not_found(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelBadRequest(
        f"{ctx.where} does not know what we asked for ({_status(exc)}: {_detail(exc)}). Check the"
        " model id and that the base URL ends where the OpenAI API starts (usually /v1).",
        model=ctx.model,
    )


def _auth_refused(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelRefused(
        f"{ctx.where} refused our credentials ({_status(exc)}: {_detail(exc)}). Check the API key"
        " (model.openai_api_key / OPENAI_API_KEY) and that it may use this model.",
        model=ctx.model,
    )


def _content_refused(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelRefused(
        f"{ctx.where} refused the content under its usage policy ({_status(exc)}:"
        f" {_detail(exc)}). Rephrase the request; retrying it unchanged will not help.",
        model=ctx.model,
    )


def _by_status(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    """A status the SDK has no class for (402, 405, 408, 413, ...): decide by its number."""
    code = exc.status_code if isinstance(exc, openai.APIStatusError) else 500
    if code == 408:
        return _timeout(exc, ctx)
    if code == 429:
        return _rate_limited(exc, ctx)
    if code in (401, 402, 403):
        return _auth_refused(exc, ctx)
    if 400 <= code < 500:
        return _bad_request(exc, ctx)
    return _server_error(exc, ctx)


def _malformed(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelUnavailable(
        f"malformed response from {ctx.where}: {_detail(exc)}. Check that the base URL points"
        " at an OpenAI-compatible API.",
        model=ctx.model,
    )


def _length(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelBadRequest(
        f"{ctx.where} stopped at the max_tokens limit before finishing ({_detail(exc)}). Raise"
        " max_tokens (planner.max_tokens) or ask for less.",
        model=ctx.model,
    )


def _transport(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    return ModelUnavailable(
        f"{ctx.where} failed in transport ({type(exc).__name__}: {_detail(exc)}). Retry later.",
        model=ctx.model,
    )


def _client_side(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    # Raised by the SDK itself, not by the server: how we use or configure it is wrong.
    return ModelBadRequest(
        f"the openai SDK refused to call {ctx.where} ({type(exc).__name__}: {_detail(exc)})."
        " Fix the model configuration; it will not be retried.",
        model=ctx.model,
    )


#: Every `openai` exception class we decided on, and how it maps. Looked up along the MRO.
OPENAI_ERROR_HANDLERS: Final[Mapping[type[openai.OpenAIError], ErrorHandler]] = MappingProxyType(
    {
        openai.APITimeoutError: _timeout,
        openai.APIConnectionError: _connection,
        openai.RateLimitError: _rate_limited,
        openai.InternalServerError: _server_error,
        openai.BadRequestError: _bad_request,
        openai.UnprocessableEntityError: _bad_request,
        openai.ConflictError: _bad_request,
        openai.NotFoundError: _not_found,
        openai.AuthenticationError: _auth_refused,
        openai.OAuthError: _auth_refused,
        openai.PermissionDeniedError: _auth_refused,
        openai.APIStatusError: _by_status,
        openai.APIResponseValidationError: _malformed,
        openai.ContentFilterFinishReasonError: _content_refused,
        openai.LengthFinishReasonError: _length,
        openai.WebSocketConnectionClosedError: _transport,
        openai.WebSocketQueueFullError: _transport,
        openai.APIError: _transport,
        openai.OpenAIError: _client_side,
    }
)


def map_openai_error(exc: openai.OpenAIError, ctx: ErrorContext) -> ModelError:
    """The `ModelError` that stands for `exc` (not raised: the caller raises it ``from exc``)."""
    for klass in type(exc).__mro__:
        handler = OPENAI_ERROR_HANDLERS.get(klass)
        if handler is not None:
            return handler(exc, ctx)
    raise AssertionError("unreachable: openai.OpenAIError is in the table")  # pragma: no cover


@contextmanager
def openai_errors(*, model: str, endpoint: str, timeout_s: float, clock: Clock) -> Iterator[None]:
    """Turn whatever the SDK raises inside the block into a `ModelError`, ``from`` the original.

    Besides the SDK's own exceptions, a body that is not JSON at all escapes the SDK as a decoding
    error (it trusts a JSON content type); that is a malformed response too.
    """
    try:
        yield
    except openai.OpenAIError as exc:
        ctx = ErrorContext(model=model, endpoint=endpoint, timeout_s=timeout_s, now=clock.now())
        raise map_openai_error(exc, ctx) from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelUnavailable(
            f"malformed response from {model} at {endpoint}: the body is not valid JSON ({exc})."
            " Check that the base URL points at an OpenAI-compatible API.",
            model=model,
        ) from exc


class OpenAIChatModel(ChatModel):
    """A `ChatModel` over any OpenAI-compatible chat-completions endpoint.

    Create it once per process and ``await aclose()`` (or use ``async with``) when done: it owns
    an HTTP connection pool unless a client was injected.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None,
        api_key: str | None,
        clock: Clock,
        timeout_s: float = 60,
        client: AsyncOpenAI | None = None,
        strict_schema: bool = False,
    ) -> None:
        """Configure the model; no network traffic happens until `complete`.

        Args:
            model: The provider's model id, e.g. ``gpt-4o-mini``.
            base_url: The API root (``.../v1``); None takes the SDK's default (``OPENAI_BASE_URL``,
                else api.openai.com).
            api_key: None takes the SDK's default (``OPENAI_API_KEY``), else a placeholder, which
                is all local servers need.
            clock: Measures latency and dates Retry-After hints.
            timeout_s: Per-request limit, also imposed on an injected client.
            client: An SDK client to use instead of building one (never closed by `aclose`).
            strict_schema: Ask the provider to enforce ``json_schema`` strictly (OpenAI's strict
                mode accepts only a subset of JSON Schema, so it is opt-in).

        Raises:
            ConfigError: an empty model id or a non-positive timeout.
        """
        if not model.strip():
            raise ConfigError("OpenAIChatModel needs a model id, e.g. model='gpt-4o-mini'")
        if timeout_s <= 0:
            raise ConfigError(f"OpenAIChatModel timeout_s must be positive, got {timeout_s!r}")
        self._model = model
        self._clock = clock
        self._timeout_s = timeout_s
        self._strict_schema = strict_schema
        self._owns_client = client is None
        if client is None:
            self._client = _build_client(base_url=base_url, api_key=api_key, timeout_s=timeout_s)
        else:
            self._client = client.with_options(max_retries=0, timeout=timeout_s)

    @property
    def name(self) -> str:
        return f"openai:{self._model}"

    @property
    def endpoint(self) -> str:
        """The base URL requests go to."""
        return str(self._client.base_url).rstrip("/")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        """Ask the endpoint once; see `ChatModel`.

        Raises:
            ModelError: the mapped provider failure, or `ModelUnavailable` for a malformed
                response, or `ModelRefused` for a refusal.
        """
        response_format: ResponseFormat | openai.Omit = omit
        if request.json_schema is not None:
            response_format = {
                "type": "json_schema",
                "json_schema": {
                    "name": request.schema_name,
                    "schema": dict(request.json_schema),
                    "strict": self._strict_schema,
                },
            }
        started = self._clock.monotonic()
        with openai_errors(
            model=self.name, endpoint=self.endpoint, timeout_s=self._timeout_s, clock=self._clock
        ):
            # Typed as object: the SDK does not validate bodies, so check rather than trust.
            raw: object = await self._client.chat.completions.create(
                model=self._model,
                messages=[_message_param(message) for message in request.messages],
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                response_format=response_format,
            )
        return self._to_response(raw, latency_s=self._clock.monotonic() - started)

    def _to_response(self, raw: object, *, latency_s: float) -> ChatResponse:
        if not isinstance(raw, ChatCompletion):
            raise self._malformed(f"expected a chat completion, got {type(raw).__name__}")
        choices: object = raw.choices
        if not isinstance(choices, list) or not choices:
            raise self._malformed("it has no choices")
        choice: object = choices[0]
        message: object = getattr(choice, "message", None)
        if not isinstance(choice, Choice) or not isinstance(message, ChatCompletionMessage):
            raise self._malformed("its first choice has no message")
        refusal: object = message.refusal
        if refusal or choice.finish_reason == "content_filter":
            reason = refusal if isinstance(refusal, str) and refusal else "content filter"
            raise ModelRefused(
                f"{self.name} at {self.endpoint} refused to answer ({reason}). Rephrase the"
                " request; retrying it unchanged will not help.",
                model=self.name,
            )
        if not isinstance(message.content, str):
            raise self._malformed("its message has no content")
        return ChatResponse(
            text=message.content,
            model=self.name,
            usage=_usage(raw.usage),
            finish_reason=str(choice.finish_reason or "stop"),
            latency_s=latency_s,
        )

    def _malformed(self, problem: str) -> ModelUnavailable:
        return ModelUnavailable(
            f"malformed response from {self.name} at {self.endpoint}: {problem}. Check that the"
            " base URL points at an OpenAI-compatible API.",
            model=self.name,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this model built it; an injected client is the caller's."""
        if self._owns_client:
            await self._client.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def _build_client(*, base_url: str | None, api_key: str | None, timeout_s: float) -> AsyncOpenAI:
    if api_key is None:
        try:
            return AsyncOpenAI(base_url=base_url, timeout=timeout_s, max_retries=0)
        except openai.OpenAIError:
            # The SDK found no key of its own (OPENAI_API_KEY): fine for a local server.
            api_key = PLACEHOLDER_API_KEY
    return AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout_s, max_retries=0)


def _message_param(message: ChatMessage) -> ChatCompletionMessageParam:
    match message.role:
        case "system":
            return {"role": "system", "content": message.content}
        case "user":
            return {"role": "user", "content": message.content}
        case "assistant":
            return {"role": "assistant", "content": message.content}
        case _:  # pragma: no cover
            assert_never(message.role)


def _usage(raw: object) -> Usage:
    """Token counts as reported; 0 for whatever the server left out."""
    if not isinstance(raw, CompletionUsage):
        return Usage()
    prompt: object = raw.prompt_tokens
    completion: object = raw.completion_tokens
    details: object = raw.prompt_tokens_details
    cached: object = getattr(details, "cached_tokens", None)
    return Usage(
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=completion if isinstance(completion, int) else 0,
        cached_input_tokens=cached if isinstance(cached, int) else 0,
    )
