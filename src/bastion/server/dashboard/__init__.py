"""The dashboard at ``/``: live runs, a run's plan and timeline, approvals, spend, breakers.

Server-rendered (Jinja2, autoescaped) with a little JavaScript: pages are plain HTML that work on
their own; a script listens to Server-Sent Events (``/ui/stream`` for every run the viewer may
see, ``/v1/runs/{id}/events`` for one run) and, on each event, fetches the part of the page that
changed as an HTML fragment. Buttons call the API (approve, deny, cancel).

Sign-in: the viewer pastes an API key once; ``POST /ui/session`` checks it and keeps it in an
HttpOnly, SameSite=Strict cookie, which the API accepts like a bearer key. Other users' runs are
hidden exactly as in the API (admins see all).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from fastapi.templating import Jinja2Templates
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from bastion.errors import NotAuthenticated
from bastion.server.auth import Caller
from bastion.server.errors import Unauthorized
from bastion.server.routes.approvals import pending_for
from bastion.server.schemas import EventView, RunView, usd
from bastion.server.state import (
    SESSION_COOKIE,
    CurrentCaller,
    ServerState,
    State,
    get_caller,
    visible,
)

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
templates.env.filters["usd"] = usd


async def optional_caller(request: Request, state: State) -> Caller | None:
    """The signed-in viewer (session cookie or bearer key), or None (the page asks for a key)."""
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    bearer = None
    if scheme.lower() == "bearer" and key.strip():
        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key.strip())
    try:
        return await get_caller(
            state, credentials=bearer, cookie=request.cookies.get(SESSION_COOKIE)
        )
    except (Unauthorized, NotAuthenticated):
        return None


Viewer = Annotated[Caller | None, Depends(optional_caller)]


async def overview(state: ServerState, caller: Caller) -> dict[str, Any]:
    """What the overview shows: recent runs, pending approvals, spend, breakers."""
    user = None if caller.is_admin else caller.principal.id
    page = await state.store.list_runs(user_id=user, limit=25)
    by_user = await state.store.usage(user_id=user, by="user")
    by_model = await state.store.usage(user_id=user, by="model")
    return {
        "caller": caller,
        "app_name": state.app_name,
        "runs": page.runs,
        "approvals": await pending_for(state, caller, None),
        "spend_by_user": by_user,
        "spend_by_model": by_model,
        "breakers": sorted((k, str(v)) for k, v in state.system.breaker_states().items()),
        "model": state.system.model_name,
    }


@router.get("/", response_class=HTMLResponse)
async def index(request: Request, state: State, viewer: Viewer) -> Response:
    """The overview, or the sign-in form."""
    if viewer is None:
        return templates.TemplateResponse(request, "login.html", {"app_name": state.app_name})
    return templates.TemplateResponse(request, "index.html", await overview(state, viewer))


@router.get("/ui/fragments/overview", response_class=HTMLResponse)
async def overview_fragment(request: Request, state: State, caller: CurrentCaller) -> Response:
    """The overview's live part, re-fetched by the page on each event."""
    return templates.TemplateResponse(request, "_overview.html", await overview(state, caller))


async def _run_context(state: ServerState, caller: Caller, run_id: str) -> dict[str, Any]:
    record = visible(await state.store.get_run(run_id), caller, run_id)
    return {
        "caller": caller,
        "app_name": state.app_name,
        "run": RunView.full(record),
        "approvals": await pending_for(state, caller, run_id),
    }


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(request: Request, run_id: str, state: State, viewer: Viewer) -> Response:
    """One run: plan, steps, timeline, cost, approvals."""
    if viewer is None:
        return templates.TemplateResponse(request, "login.html", {"app_name": state.app_name})
    context = await _run_context(state, viewer, run_id)
    return templates.TemplateResponse(request, "run.html", context)


@router.get("/ui/fragments/runs/{run_id}", response_class=HTMLResponse)
async def run_fragment(
    request: Request, run_id: str, state: State, caller: CurrentCaller
) -> Response:
    """A run page's live part."""
    context = await _run_context(state, caller, run_id)
    return templates.TemplateResponse(request, "_run.html", context)


class SignIn(BaseModel):
    """An API key to sign in with."""

    api_key: str = Field(min_length=1, max_length=200)


@router.post("/ui/session")
async def sign_in(body: SignIn, request: Request, state: State) -> Response:
    """Check the key and keep it in the session cookie."""
    caller = await state.auth.authenticate(body.api_key.strip())
    response = JSONResponse({"principal": caller.principal.id})
    response.set_cookie(
        SESSION_COOKIE,
        body.api_key.strip(),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


@router.post("/ui/session/end")
async def sign_out() -> Response:
    """Forget the session cookie."""
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/ui/stream")
async def stream(state: State, caller: CurrentCaller) -> EventSourceResponse:
    """Every live event of the runs the viewer may see (not resumable: it only wakes the page)."""

    async def events() -> AsyncIterator[dict[str, str]]:
        with state.hub.subscribe_all() as queue:
            while True:
                event = await queue.get()
                owner = state.hub.owners.get(event.run_id)
                if not caller.is_admin and owner != caller.principal.id:
                    continue
                yield {
                    "event": event.kind.value,
                    "data": json.dumps(
                        {"run_id": event.run_id, **EventView.of(event).model_dump(mode="json")}
                    ),
                }

    return EventSourceResponse(events(), ping=int(max(1, state.settings.server.stream_ping_s)))
