"""`create_app`: the FastAPI app serving one `AgentSystem` over HTTP.

The app owns the system's lifecycle (the lifespan starts it and closes it), a store of its own for
reads (`ServerStore`), the hub of its runs (`RunHub`) and its metrics. Routes are split by concern
in `bastion.server.routes`; errors are typed JSON (`bastion.server.errors`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request, Response
from opentelemetry.sdk.trace import TracerProvider
from starlette.middleware.base import RequestResponseEndpoint

from bastion.clock import Clock, SystemClock
from bastion.gate.wiring import gate_from_settings
from bastion.server import dashboard, telemetry
from bastion.server.auth import Authenticator
from bastion.server.errors import install_error_handlers
from bastion.server.live import RunHub
from bastion.server.metrics import Metrics
from bastion.server.routes import admin, approvals, chat, health, runs
from bastion.server.state import ServerState
from bastion.server.store import ServerStore
from bastion.settings import Settings
from bastion.storage.engine import create_engine
from bastion.system import AgentSystem

API_VERSION = "1"


def create_app(
    system: AgentSystem,
    *,
    settings: Settings,
    name: str = "agent",
    clock: Clock | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The HTTP app for `system`.

    Args:
        system: the agent app to serve (started and closed by the app's lifespan).
        settings: the settings `system` was built from (its database, gate secret, server).
        name: the app's name (the ``model`` of the OpenAI-compatible endpoint).
        clock: the source of time (the system's by default).
        tracer_provider: where run spans go; by default the one ``observability`` describes
            (none when tracing is off). The app shuts down a provider it made, not one given.
    """
    clock = clock or system.components.clock or SystemClock()
    metrics = Metrics()
    own_provider = tracer_provider is None
    provider = telemetry.tracer_provider(settings) if own_provider else tracer_provider

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = create_engine(settings.database_url)
        wiring = gate_from_settings(settings, engine=engine, clock=clock)
        store = ServerStore(engine=engine, wiring=wiring, memory=system.components.memory)
        try:
            async with system, RunHub(system) as hub:
                hub.observers.append(metrics.observe)
                if provider is not None:
                    tracer = provider.get_tracer("bastion.server")
                    hub.observers.append(telemetry.RunTracer(tracer, agent_name=name).observe)
                metrics.watch(
                    breakers=lambda: {k: str(v) for k, v in system.breaker_states().items()},
                    active=lambda: hub.active,
                )
                app.state.bastion = ServerState(
                    system=system,
                    app_name=name,
                    settings=settings,
                    clock=clock,
                    store=store,
                    hub=hub,
                    auth=Authenticator(gate=system.components.gate, keys=wiring.keys),
                    metrics=metrics,
                )
                yield
        finally:
            await store.close()
            if provider is not None and own_provider:
                provider.shutdown()

    app = FastAPI(
        title="Bastion",
        version=API_VERSION,
        description="Run agents as a service: runs, live events, usage, audit, health.",
        lifespan=lifespan,
    )
    install_error_handlers(app)

    @app.middleware("http")
    async def count(request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await call_next(request)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        metrics.http_requests.labels(path, str(response.status_code)).inc()
        if response.status_code == 429:
            metrics.rate_limited.labels("http").inc()
        return response

    for module in (runs, approvals, chat, admin, health):
        app.include_router(module.router)
    app.include_router(dashboard.router)
    return app
