"""The server's parts, built in the lifespan, and the dependencies routes take them by.

One `ServerState` per app, kept on ``app.state``; routes ask for it (and for the authenticated
`Caller`) through FastAPI dependencies, so a route's signature says what it uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from bastion.clock import Clock
from bastion.memory.interface import RunRecord
from bastion.server.auth import Authenticator, Caller
from bastion.server.errors import Forbidden, NotFound, Unauthorized
from bastion.server.live import RunHub
from bastion.server.metrics import Metrics
from bastion.server.store import ServerStore
from bastion.settings import Settings
from bastion.system import AgentSystem


@dataclass(kw_only=True)
class ServerState:
    """Everything the routes use."""

    system: AgentSystem
    #: The app's name: what ``model`` names in the OpenAI-compatible endpoint.
    app_name: str
    settings: Settings
    clock: Clock
    store: ServerStore
    hub: RunHub
    auth: Authenticator
    metrics: Metrics = field(default_factory=Metrics)


def get_state(request: Request) -> ServerState:
    """The app's `ServerState` (set by the lifespan)."""
    state: ServerState = request.app.state.bastion
    return state


State = Annotated[ServerState, Depends(get_state)]

_bearer = HTTPBearer(auto_error=False, description="An API key: bastion keys create")
#: The dashboard's session: the API key in an HttpOnly, SameSite=Strict cookie (set by
#: ``POST /ui/session``), so that the browser's own requests carry it and scripts never see it.
SESSION_COOKIE = "bastion_key"
_cookie = APIKeyCookie(name=SESSION_COOKIE, auto_error=False, description="The dashboard's")


async def get_caller(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    cookie: Annotated[str | None, Depends(_cookie)],
) -> Caller:
    """The authenticated caller (401 without a valid ``Authorization: Bearer`` key or session)."""
    if credentials is not None and credentials.credentials.strip():
        return await state.auth.authenticate(credentials.credentials.strip())
    if cookie:
        return await state.auth.authenticate(cookie)
    raise Unauthorized(
        "no API key: send 'Authorization: Bearer <api key>' (create one with: bastion keys create)",
        headers={"WWW-Authenticate": "Bearer"},
    )


CurrentCaller = Annotated[Caller, Depends(get_caller)]


async def require_admin(caller: CurrentCaller) -> Caller:
    """The caller, if an admin (403 otherwise)."""
    if not caller.is_admin:
        raise Forbidden(f"{caller.principal.id!r} is not an admin: this needs the admin role")
    return caller


AdminCaller = Annotated[Caller, Depends(require_admin)]


def visible(record: RunRecord | None, caller: Caller, run_id: str) -> RunRecord:
    """`record` if the caller may see it; another user's run is *not found*, not forbidden."""
    if record is None or (record.user_id != caller.principal.id and not caller.is_admin):
        raise NotFound(f"no run {run_id!r}", run_id=run_id)
    return record
