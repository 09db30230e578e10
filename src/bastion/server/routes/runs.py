"""``/v1/runs``: create (sync or async, idempotent), read, list, cancel, stream events (SSE).

Idempotency: a create with an ``Idempotency-Key`` header gets a run id derived from the caller's
principal and the key (``run_`` + SHA-256, truncated), so the mapping key → run lives in the
database as the run's own row, scoped per principal, with no table of its own; it survives
restarts, and in durable mode the run id is the workflow id, so a retry reaching another replica
attaches to the same workflow. The same key with a different request is a 409.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response, status
from sse_starlette import EventSourceResponse

from bastion.messages import AgentRequest, RunStatus, new_id
from bastion.server.auth import Caller
from bastion.server.errors import Conflict, ErrorBody, InvalidRequest, Unavailable
from bastion.server.live import stream_events
from bastion.server.schemas import CreateRun, EventView, RunList, RunSummary, RunView
from bastion.server.state import CurrentCaller, ServerState, State, visible
from bastion.server.store import BadCursor

router = APIRouter(prefix="/v1", tags=["runs"])

RunId = Annotated[str, Path(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_\-:.]+$")]

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No, or no valid, API key."},
    404: {"model": ErrorBody, "description": "No such run (or not yours)."},
    422: {"model": ErrorBody, "description": "Invalid request."},
}


def idempotent_run_id(principal_id: str, key: str) -> str:
    """The run id a principal's ``Idempotency-Key`` stands for."""
    digest = hashlib.sha256(f"{principal_id}\0{key}".encode()).hexdigest()
    return f"run_{digest[:32]}"


async def run_view(state: ServerState, run_id: str) -> RunView:
    """The run's full view, from the store."""
    record = await state.store.get_run(run_id)
    if record is None:  # the run could not even be recorded (its failure is logged)
        raise Unavailable(
            f"run {run_id!r} could not be recorded: see the server's log", run_id=run_id
        )
    return RunView.full(record)


async def start_run(
    state: ServerState, caller: Caller, body: CreateRun, idempotency_key: str | None
) -> tuple[str, bool]:
    """Start the run `body` asks for (or find the one its idempotency key names).

    Returns:
        The run id, and whether it was started by this call.

    Raises:
        Conflict: the idempotency key was used for a different request.
    """
    principal = caller.principal
    if idempotency_key is None:
        run_id = new_id()
        session_id = body.session_id or new_id("http")
    else:
        run_id = idempotent_run_id(principal.id, idempotency_key)
        session_id = body.session_id or f"http_{run_id[4:24]}"
        existing = await state.store.run_header(run_id)
        if existing is not None:
            if (existing.request_message, existing.session_id) != (body.message, session_id):
                raise Conflict(
                    "this Idempotency-Key was used for a different request: use a new key for "
                    "a new run",
                    run_id=run_id,
                )
            return run_id, False
    fields: dict[str, Any] = {}
    if body.max_budget_usd is not None:
        fields["max_budget_usd"] = body.max_budget_usd
    request = AgentRequest(
        user_id=principal.id,
        session_id=session_id,
        message=body.message,
        run_id=run_id,
        timeout_s=body.timeout_s,
        api_key=caller.api_key,
        **fields,
    )
    await state.hub.start(request)
    return run_id, True


@router.post(
    "/runs",
    response_model=RunView,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": RunView, "description": "An idempotent retry: the run already made."},
        201: {"model": RunView, "description": "The run was made and has ended (wait)."},
        409: {"model": ErrorBody, "description": "Idempotency-Key reused for another request."},
        **_ERRORS,
    },
)
async def create_run(
    body: CreateRun,
    caller: CurrentCaller,
    state: State,
    response: Response,
    idempotency_key: Annotated[
        str | None, Header(alias="Idempotency-Key", min_length=1, max_length=255)
    ] = None,
) -> RunView:
    """Start a run. With ``wait``, answer when it ends (201) or at ``wait_timeout_s`` (202)."""
    run_id, created = await start_run(state, caller, body, idempotency_key)
    task = state.hub.running(run_id)
    if body.wait and task is not None:
        await asyncio.wait([task], timeout=body.wait_timeout_s)
    view = await run_view(state, run_id)
    if not created:
        response.status_code = status.HTTP_200_OK
    elif view.terminal:
        response.status_code = status.HTTP_201_CREATED
    response.headers["Location"] = f"/v1/runs/{run_id}"
    return view


@router.get("/runs", response_model=RunList, responses=_ERRORS)
async def list_runs(
    caller: CurrentCaller,
    state: State,
    run_status: Annotated[RunStatus | None, Query(alias="status")] = None,
    session_id: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    user_id: Annotated[
        str | None, Query(min_length=1, max_length=255, description="Admins only.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(min_length=1, max_length=1000)] = None,
) -> RunList:
    """Your runs, newest first (an admin sees everyone's, or `user_id`'s)."""
    if not caller.is_admin:
        if user_id is not None and user_id != caller.principal.id:
            return RunList(data=[], next_cursor=None)
        user_id = caller.principal.id
    try:
        page = await state.store.list_runs(
            user_id=user_id, status=run_status, session_id=session_id, limit=limit, cursor=cursor
        )
    except BadCursor as exc:
        raise InvalidRequest(str(exc)) from None
    return RunList(data=[RunSummary.of(r) for r in page.runs], next_cursor=page.next_cursor)


@router.get("/runs/{run_id}", response_model=RunView, responses=_ERRORS)
async def get_run(run_id: RunId, caller: CurrentCaller, state: State) -> RunView:
    """A run with its plan, steps, cost and events."""
    record = visible(await state.store.get_run(run_id), caller, run_id)
    return RunView.full(record)


@router.post(
    "/runs/{run_id}/cancel",
    response_model=RunView,
    responses={
        202: {"model": RunView, "description": "Cancellation sent to the durable run."},
        409: {"model": ErrorBody, "description": "The run has ended, or runs elsewhere."},
        **_ERRORS,
    },
)
async def cancel_run(
    run_id: RunId, caller: CurrentCaller, state: State, response: Response
) -> RunView:
    """Cancel a run under way: it is checkpointed ``cancelled`` and its budget released.

    A run under way in this server ends before the answer (200). A durable run that another
    process runs (or that this one recovered) is cancelled through DBOS and stops at its next
    step boundary (202).
    """
    record = visible(await state.store.run_header(run_id), caller, run_id)
    if record.status.is_terminal:
        raise Conflict(f"run {run_id!r} has already ended ({record.status.value})", run_id=run_id)
    if not await state.hub.cancel(run_id):
        if state.system.durable is None:
            raise Conflict(
                f"run {run_id!r} is not under way in this server (another replica runs it, or "
                "it was interrupted): cancel it there",
                run_id=run_id,
            )
        from bastion.durable import DurableAdmin

        try:
            await DurableAdmin(settings=state.settings).cancel(run_id)
        except KeyError:
            raise Conflict(f"run {run_id!r} has no durable workflow", run_id=run_id) from None
        response.status_code = status.HTTP_202_ACCEPTED
    return await run_view(state, run_id)


def _last_event_id(header: str | None, after: int | None) -> int:
    if header is None:
        return after or 0
    try:
        value = int(header)
    except ValueError:
        raise InvalidRequest(
            f"Last-Event-ID must be an event's seq (a number), got {header!r}"
        ) from None
    if value < 0:
        raise InvalidRequest(f"Last-Event-ID must not be negative, got {value}")
    return value


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "Server-Sent Events: id = seq, event = kind, data = the event (JSON).",
        },
        **_ERRORS,
    },
)
async def run_events(
    run_id: RunId,
    caller: CurrentCaller,
    state: State,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
    after: Annotated[int | None, Query(ge=0, description="Resume after this seq.")] = None,
) -> EventSourceResponse:
    """Stream the run's events from the start (or after ``Last-Event-ID``) until it ends."""
    visible(await state.store.run_header(run_id), caller, run_id)
    start = _last_event_id(last_event_id, after)

    async def events() -> AsyncIterator[dict[str, str]]:
        async for event in stream_events(
            run_id,
            after=start,
            hub=state.hub,
            load=state.store.get_run,
            poll_s=state.settings.server.stream_poll_s,
        ):
            yield {
                "id": str(event.seq),
                "event": event.kind.value,
                "data": json.dumps(EventView.of(event).model_dump(mode="json")),
            }

    return EventSourceResponse(events(), ping=int(max(1, state.settings.server.stream_ping_s)))
