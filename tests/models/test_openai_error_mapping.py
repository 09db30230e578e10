"""Every `openai` exception maps onto the `ModelError` family, decided on purpose.

The classes are found by introspection, not listed by hand, so a new SDK version that adds one
fails here until `OPENAI_ERROR_HANDLERS` says how it maps (httpx's `tests/test_exceptions.py`).
"""

from __future__ import annotations

import inspect
from datetime import timedelta
from email.utils import format_datetime

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from bastion.errors import (
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.openai_compat import (
    OPENAI_ERROR_HANDLERS,
    ErrorContext,
    map_openai_error,
    openai_errors,
)
from bastion.testing.clock import FakeClock

CLOCK = FakeClock()
CTX = ErrorContext(model="openai:m", endpoint="http://x/v1", timeout_s=3.0, now=CLOCK.now())
REQUEST = httpx.Request("POST", "http://x/v1/chat/completions")


def exported_error_classes() -> list[type[openai.OpenAIError]]:
    """Every public name of the `openai` package that is an `OpenAIError` subclass."""
    found = {
        value
        for name, value in list(vars(openai).items())
        if not name.startswith("_")
        and inspect.isclass(value)
        and issubclass(value, openai.OpenAIError)
    }
    return sorted(found, key=lambda klass: klass.__qualname__)


def all_sdk_error_classes() -> list[type[openai.OpenAIError]]:
    """Every `OpenAIError` subclass the SDK defines, exported or not."""
    seen: set[type[openai.OpenAIError]] = set()
    todo: list[type[openai.OpenAIError]] = [openai.OpenAIError]
    while todo:
        klass = todo.pop()
        if klass not in seen and klass.__module__.split(".")[0] == "openai":
            seen.add(klass)
            todo.extend(klass.__subclasses__())
    return sorted(seen, key=lambda klass: klass.__qualname__)


def build(klass: type[openai.OpenAIError], *, status: int | None = None) -> openai.OpenAIError:
    """An instance of `klass`, its constructor's required arguments filled in by name."""
    declared = getattr(klass, "status_code", None)
    code = status or (declared if isinstance(declared, int) else 500)
    response = httpx.Response(code, request=REQUEST, headers={"retry-after": "2"})
    completion = ChatCompletion.model_construct(
        id="x", choices=[], created=0, model="m", object="chat.completion"
    )
    values = {
        "message": "boom",
        "request": REQUEST,
        "response": response,
        "body": None,
        "completion": completion,
        "unsent_messages": [],
        "symbol": "openai.Completion",
    }
    try:
        parameters = inspect.signature(klass).parameters
    except ValueError:  # no __init__ of its own: Exception's, which takes a message
        return klass("boom")
    kwargs = {}
    for name, param in parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in values:
            kwargs[name] = values[name]
        elif param.default is param.empty:
            pytest.fail(f"don't know how to build {klass.__qualname__}: teach build() {name!r}")
    return klass(**kwargs)


def test_introspection_finds_the_known_classes() -> None:
    exported = exported_error_classes()
    assert openai.RateLimitError in exported
    assert openai.APITimeoutError in exported
    assert len(exported) >= 15


@pytest.mark.parametrize("klass", exported_error_classes(), ids=lambda k: k.__qualname__)
def test_every_exported_sdk_error_has_a_decided_mapping(klass: type[openai.OpenAIError]) -> None:
    assert klass in OPENAI_ERROR_HANDLERS, (
        f"openai.{klass.__qualname__} has no entry in OPENAI_ERROR_HANDLERS: decide which"
        " ModelError it is and add it"
    )
    assert isinstance(map_openai_error(build(klass), CTX), ModelError)


@pytest.mark.parametrize("klass", all_sdk_error_classes(), ids=lambda k: k.__qualname__)
def test_every_sdk_error_maps_to_a_model_error(klass: type[openai.OpenAIError]) -> None:
    mapped = map_openai_error(build(klass), CTX)

    assert isinstance(mapped, ModelError)
    assert mapped.model == "openai:m"
    assert "openai:m" in str(mapped)


@pytest.mark.parametrize(
    ("klass", "expected"),
    [
        (openai.RateLimitError, ModelRateLimited),
        (openai.APITimeoutError, ModelTimeout),
        (openai.APIConnectionError, ModelUnavailable),
        (openai.InternalServerError, ModelUnavailable),
        (openai.BadRequestError, ModelBadRequest),
        (openai.UnprocessableEntityError, ModelBadRequest),
        (openai.NotFoundError, ModelBadRequest),
        (openai.ConflictError, ModelBadRequest),
        (openai.AuthenticationError, ModelRefused),
        (openai.OAuthError, ModelRefused),
        (openai.PermissionDeniedError, ModelRefused),
        (openai.ContentFilterFinishReasonError, ModelRefused),
        (openai.LengthFinishReasonError, ModelBadRequest),
        (openai.APIResponseValidationError, ModelUnavailable),
        (openai.WebSocketConnectionClosedError, ModelUnavailable),
        (openai.WebSocketQueueFullError, ModelUnavailable),
        (openai.APIError, ModelUnavailable),
        (openai.OpenAIError, ModelBadRequest),
    ],
)
def test_each_class_maps_to_its_kind(
    klass: type[openai.OpenAIError], expected: type[ModelError]
) -> None:
    assert type(map_openai_error(build(klass), CTX)) is expected


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (408, ModelTimeout),
        (429, ModelRateLimited),
        (401, ModelRefused),
        (402, ModelRefused),
        (403, ModelRefused),
        (405, ModelBadRequest),
        (413, ModelBadRequest),
        (500, ModelUnavailable),
        (504, ModelUnavailable),
        (302, ModelUnavailable),
    ],
)
def test_a_bare_status_error_is_decided_by_its_status(
    status: int, expected: type[ModelError]
) -> None:
    assert type(map_openai_error(build(openai.APIStatusError, status=status), CTX)) is expected


def test_a_subclass_the_table_does_not_name_falls_back_to_its_parent() -> None:
    class NewTimeout(openai.APITimeoutError):
        pass

    assert type(map_openai_error(NewTimeout(REQUEST), CTX)) is ModelTimeout


def test_rate_limit_retry_after_http_date_is_measured_on_the_clock() -> None:
    when = format_datetime(CTX.now + timedelta(seconds=45), usegmt=True)
    response = httpx.Response(429, request=REQUEST, headers={"retry-after": when})
    exc = openai.RateLimitError("slow down", response=response, body=None)

    mapped = map_openai_error(exc, CTX)

    assert isinstance(mapped, ModelRateLimited)
    assert mapped.retry_after_s == 45


def test_timeout_message_names_model_endpoint_and_limit() -> None:
    mapped = map_openai_error(openai.APITimeoutError(REQUEST), CTX)

    assert str(mapped).startswith("openai:m at http://x/v1 did not answer within 3 s")


def test_connection_message_carries_the_cause() -> None:
    exc = openai.APIConnectionError(request=REQUEST)
    exc.__cause__ = ConnectionRefusedError("[Errno 111] Connection refused")

    assert "Connection refused" in str(map_openai_error(exc, CTX))


def test_context_manager_raises_the_mapped_error_from_the_original() -> None:
    original = openai.APITimeoutError(REQUEST)

    with (
        pytest.raises(ModelTimeout) as caught,
        openai_errors(model="openai:m", endpoint="http://x/v1", timeout_s=1.0, clock=CLOCK),
    ):
        raise original

    assert caught.value.__cause__ is original


def test_context_manager_leaves_other_exceptions_alone() -> None:
    with (
        pytest.raises(KeyError),
        openai_errors(model="openai:m", endpoint="http://x/v1", timeout_s=1.0, clock=CLOCK),
    ):
        raise KeyError("ours")
