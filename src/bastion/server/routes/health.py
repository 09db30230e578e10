"""``/healthz`` (the process answers), ``/readyz`` (it can take runs) and ``/metrics``.

Readiness checks what a run needs: the database (``SELECT 1``), Redis when the settings name one
(``resilience.state_url``: ``PING``), and the model, by its circuit breaker (an open breaker means
the model has been failing; the check never spends a model call). Any failed check is a 503.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from bastion.server.metrics import CONTENT_TYPE
from bastion.server.schemas import Check, Health, Readiness
from bastion.server.state import ServerState, State

router = APIRouter(tags=["health"])

_TIMEOUT_S = 2.0


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health()


async def _database(state: ServerState) -> Check:
    try:
        await asyncio.wait_for(state.store.ping(), _TIMEOUT_S)
    except Exception as exc:
        return Check(ok=False, detail=f"database unreachable: {type(exc).__name__}")
    return Check(ok=True, detail=state.store.engine.dialect.name)


async def _redis(url: str) -> Check:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return Check(ok=False, detail="resilience.state_url is set but redis is not installed")
    client = aioredis.from_url(url)
    try:
        await asyncio.wait_for(client.ping(), _TIMEOUT_S)
    except Exception as exc:
        return Check(ok=False, detail=f"redis unreachable: {type(exc).__name__}")
    finally:
        await client.aclose()
    return Check(ok=True, detail="ping ok")


def _model(state: ServerState) -> Check:
    name = state.system.model_name
    breaker = state.system.breaker_states().get(f"model:{name}")
    if breaker is not None and str(breaker) == "open":
        return Check(ok=False, detail=f"{name}: circuit breaker open (the model keeps failing)")
    return Check(ok=True, detail=f"{name}: breaker {breaker or 'closed'}")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A check failed."}},
)
async def readyz(state: State) -> Response:
    """Database, Redis (if configured) and model checks; 503 when any fails."""
    checks = {"database": await _database(state), "model": _model(state)}
    url = state.settings.resilience.state_url
    if url:
        checks["redis"] = await _redis(url)
    ready = all(c.ok for c in checks.values())
    body = Readiness(status="ready" if ready else "not_ready", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}}}},
)
async def metrics(state: State) -> Response:
    """Prometheus metrics (text exposition format)."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
