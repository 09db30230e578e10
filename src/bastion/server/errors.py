"""Typed JSON errors for the HTTP API: ``{"error": {"type", "message", "run_id"?}}``, never a trace.

Every error a client can get has a ``type`` it can branch on and a ``message`` a person can act on.
Routes raise an `ApiError` subclass; Bastion's own exceptions (`NotAuthenticated`, `RateLimited`,
...) and the framework's (a bad body, an unknown path, a wrong method) are mapped here, in one
place, and anything unplanned becomes a 500 whose message says nothing of the code (the traceback
goes to the log, with the request's path).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from bastion.errors import (
    AdmissionError,
    BastionError,
    BudgetExceeded,
    NotAuthenticated,
    PermissionDenied,
    RateLimited,
)

logger = logging.getLogger("bastion.server")


class ErrorDetail(BaseModel):
    """What went wrong, for programs (``type``) and people (``message``)."""

    type: str
    message: str
    run_id: str | None = None


class ErrorBody(BaseModel):
    """The body of every error response."""

    error: ErrorDetail


class ApiError(Exception):
    """An error answered to the client as typed JSON with `status`."""

    status: int = 500
    type: str = "internal_error"

    def __init__(
        self, message: str, *, run_id: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id
        self.headers = headers


class Unauthorized(ApiError):
    """No credentials, or credentials that identify nobody."""

    status, type = 401, "not_authenticated"


class Forbidden(ApiError):
    """The caller is known but may not do this."""

    status, type = 403, "permission_denied"


class NotFound(ApiError):
    """No such resource, or none the caller may see (another user's run is not found, too)."""

    status, type = 404, "not_found"


class Conflict(ApiError):
    """The resource is not in a state that allows this (a finished run cannot be cancelled)."""

    status, type = 409, "conflict"


class InvalidRequest(ApiError):
    """The request is malformed: the message names the field and what it must be."""

    status, type = 422, "invalid_request"


class TooManyRequests(ApiError):
    """Slow down: try again after the ``Retry-After`` header's seconds."""

    status, type = 429, "rate_limited"


class Unavailable(ApiError):
    """A dependency is down (database, model): try again later."""

    status, type = 503, "unavailable"


def error_response(
    status: int,
    type_: str,
    message: str,
    *,
    run_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The JSON response for an error."""
    detail: dict[str, Any] = {"type": type_, "message": message}
    if run_id is not None:
        detail["run_id"] = run_id
    return JSONResponse({"error": detail}, status_code=status, headers=headers)


def from_bastion_error(exc: BastionError) -> ApiError:
    """Map one of Bastion's exceptions onto the API's errors (their message is for operators)."""
    if isinstance(exc, NotAuthenticated):
        return Unauthorized(str(exc), headers={"WWW-Authenticate": "Bearer"})
    if isinstance(exc, PermissionDenied):
        return Forbidden(str(exc))
    if isinstance(exc, RateLimited):
        headers = None
        if exc.retry_after_s is not None:
            headers = {"Retry-After": str(max(1, round(exc.retry_after_s)))}
        return TooManyRequests(str(exc), headers=headers)
    if isinstance(exc, BudgetExceeded):
        error = ApiError(str(exc))
        error.status, error.type = 402, "budget_exceeded"
        return error
    if isinstance(exc, AdmissionError):
        return Forbidden(str(exc))
    return ApiError(exc.user_message)


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors():
        where = ".".join(str(part) for part in err.get("loc", ()) if part != "body")
        problems.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(problems) or "the request is invalid"


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as typed JSON."""

    async def api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return error_response(
            exc.status, exc.type, exc.message, run_id=exc.run_id, headers=exc.headers
        )

    async def bastion_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BastionError)
        return await api_error(request, from_bastion_error(exc))

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return error_response(422, InvalidRequest.type, _validation_message(exc))

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        kinds = {404: "not_found", 405: "method_not_allowed", 401: "not_authenticated"}
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        if exc.status_code == 404:
            message = f"no route {request.method} {request.url.path}: see /docs for the API"
        return error_response(
            exc.status_code,
            kinds.get(exc.status_code, "http_error"),
            message,
            headers=dict(exc.headers) if exc.headers else None,
        )

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(
            500, "internal_error", "the server failed to handle this request; it was logged"
        )

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(BastionError, bastion_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
