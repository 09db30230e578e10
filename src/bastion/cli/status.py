"""``bastion status``: the circuit breakers' states, as the shared backend knows them.

Breakers live where the calls are made. With ``resilience.state_url`` set (Redis), every worker
records each breaker's state changes there, and this command lists them: name, state, since when.
Without it, breaker state lives inside each running process and a separate CLI process has none to
show: the command says so plainly (a running service shows its own, e.g. the HTTP dashboard).

Exit code 0 when every breaker is closed (or none is known), 1 when one is open or half-open, 2 when
the backend cannot be read or the settings are wrong. Never a traceback.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer

from bastion.cli.apps import cli_settings
from bastion.cli.render import dumps
from bastion.errors import ConfigError
from bastion.resilience.wiring import redis_share

NO_SHARED_STATE = (
    "no shared state: resilience.state_url is not set, so breakers and rate limits live inside "
    "each running process and this command cannot see them. Set BASTION_RESILIENCE__STATE_URL="
    "redis://127.0.0.1:6379/0 on the workers (and here) to share and list them."
)


async def _states() -> dict[str, dict[str, str]] | None:
    share = redis_share(cli_settings())
    if share is None:
        return None
    try:
        return await share.states()
    finally:
        await share.client.aclose()


def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """List the circuit breakers' states (shared backend), and say when there is none."""
    try:
        states = asyncio.run(_states())
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # the backend is down or unreadable: say so, in one line
        typer.echo(f"error: could not read breaker state from Redis: {exc}", err=True)
        raise typer.Exit(2) from None
    if states is None:
        payload: dict[str, Any] = {"shared": False, "breakers": {}, "note": NO_SHARED_STATE}
        typer.echo(dumps(payload) if as_json else NO_SHARED_STATE)
        raise typer.Exit(0)
    if as_json:
        typer.echo(dumps({"shared": True, "breakers": states}))
    elif not states:
        typer.echo("no breaker has changed state yet: all closed")
    else:
        width = max(len(name) for name in states)
        for name, entry in states.items():
            typer.echo(
                f"{name:<{width}}  {entry.get('state', '?'):<9}  since {entry.get('at', '?')}"
            )
    unhealthy = any(entry.get("state") != "closed" for entry in states.values())
    raise typer.Exit(1 if unhealthy else 0)
