"""``bastion serve``: the HTTP service (`bastion.server`) on uvicorn.

With one worker the app is built here and handed to uvicorn; with several, uvicorn starts each
worker process from `build_server_app`, a factory reading the same app spec and settings from the
environment (``BASTION_SERVE_APP``), since an app object cannot cross into another process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import DEFAULT_APP, build_app, cli_settings
from bastion.errors import ConfigError
from bastion.settings import Settings

_APP_ENV = "BASTION_SERVE_APP"
#: Event streams never end on their own: at shutdown, open ones are closed after this long.
_GRACE_S = 5


def app_name(spec: str) -> str:
    """The app's public name, from its spec: ``bastion.demo.support:build`` → ``support``."""
    module = spec.partition(":")[0]
    return module.rsplit(".", 1)[-1] or spec


def _server_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"bastion serve needs the 'server' extra ({exc.name} is missing): "
            "pip install 'bastion-agents[server]'"
        ) from exc


def build_server_app(spec: str | None = None, settings: Settings | None = None) -> object:
    """The FastAPI app serving the app `spec` (default: ``BASTION_SERVE_APP``, else the demo)."""
    from bastion.server.app import create_app
    from bastion.server.telemetry import configure_logs

    spec = spec or os.environ.get(_APP_ENV) or DEFAULT_APP
    settings = settings or cli_settings()
    system = build_app(spec, settings)
    configure_logs(settings)
    return create_app(system, settings=settings, name=app_name(spec))


def serve(
    app_spec: Annotated[str, typer.Option("--app", help="The app factory, module:factory.")] = (
        DEFAULT_APP
    ),
    host: Annotated[str | None, typer.Option("--host", help="Address to listen on.")] = None,
    port: Annotated[
        int | None, typer.Option("--port", min=0, max=65535, help="Port to listen on.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, max=64, help="Worker processes.")
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option("--data-dir", help="Where Bastion keeps its database and logs.")
    ] = None,
) -> None:
    """Serve an agent app over HTTP: runs API, live events, OpenAI-compatible endpoint, metrics."""
    _server_extra()
    import uvicorn

    settings = cli_settings(data_dir=data_dir)
    host = host or settings.server.host
    port = settings.server.port if port is None else port
    workers = workers or settings.server.workers
    if workers == 1:
        app = build_server_app(app_spec, settings)
        uvicorn.run(
            app,  # type: ignore[arg-type]
            host=host,
            port=port,
            log_config=None,
            timeout_graceful_shutdown=_GRACE_S,
        )
        return
    os.environ[_APP_ENV] = app_spec
    if data_dir is not None:
        os.environ["BASTION_DATA_DIR"] = str(data_dir)
    uvicorn.run(
        "bastion.cli.serve:build_server_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_config=None,
        timeout_graceful_shutdown=_GRACE_S,
    )
