"""``bastion keys create|list|revoke``: API keys for principals, shown once, stored as HMACs.

The commands work on the database and server secret the settings name (the same ones
`AgentSystem.from_settings` uses), so a key made here opens the system. ``create`` with ``--scope``
or ``--role`` also creates (or updates) the principal in the database, as a service account; without
them the key is for a principal the app declares (in code or its principals file) or that the
database already holds. Every creation and revocation is recorded in the audit log.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import cli_settings
from bastion.cli.logs import configure_logging
from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.gate.interface import AuditEntry
from bastion.gate.keys import ApiKey, key_id_of
from bastion.gate.wiring import GateWiring, gate_from_settings
from bastion.messages import Principal
from bastion.settings import Settings
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate

keys_app = typer.Typer(
    name="keys",
    help="API keys: create (shown once), list, revoke.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where Bastion keeps its database and logs.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


@asynccontextmanager
async def open_gate(settings: Settings) -> AsyncIterator[GateWiring]:
    """The gate's parts on the configured database (migrated), disposed of on exit."""
    engine = create_engine(settings.database_url)
    try:
        wiring = gate_from_settings(settings, engine=engine, clock=SystemClock())
        await migrate(engine)
        yield wiring
    finally:
        await engine.dispose()


def _operator() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container without a passwd entry)
        return "unknown"


async def _record(wiring: GateWiring, action: str, key: ApiKey, at: datetime) -> None:
    await wiring.audit.append(
        AuditEntry(
            at=at,
            action=action,
            decision="allow",
            principal_id=key.principal_id,
            reason=f"{action.replace('_', ' ')} {key.label} by operator {_operator()} (CLI)",
            details={
                "key_id": key.key_id,
                "name": key.name,
                "expires_at": key.expires_at,
                "operator": _operator(),
            },
        )
    )


def _key_json(key: ApiKey, now: datetime) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "principal_id": key.principal_id,
        "name": key.name,
        "status": key.status(now).value,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "revoked_at": key.revoked_at.isoformat() if key.revoked_at else None,
    }


def _expiry(settings: Settings, days: float | None, never: bool, now: datetime) -> datetime | None:
    if never:
        if days is not None:
            raise ConfigError("give either --expires-in-days or --no-expiry, not both")
        return None
    ttl = days if days is not None else settings.gate.key_ttl_days
    return None if ttl is None else now + timedelta(days=ttl)


@keys_app.command("create")
def create(
    principal: Annotated[str, typer.Argument(help="The principal the key acts as.")],
    name: Annotated[str, typer.Option("--name", help="A label, e.g. the integration.")] = "",
    expires_in_days: Annotated[
        float | None,
        typer.Option("--expires-in-days", min=0.0001, help="Lifetime (default: settings)."),
    ] = None,
    no_expiry: Annotated[bool, typer.Option("--no-expiry", help="Valid until revoked.")] = False,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="Make PRINCIPAL a service account with this scope."),
    ] = None,
    role: Annotated[
        list[str] | None, typer.Option("--role", help="A role of the service account.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Create an API key for PRINCIPAL and print it, once: it cannot be shown again."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)
    if not principal.strip():
        raise ConfigError("the principal id must not be empty")

    async def go() -> tuple[str, ApiKey, bool]:
        async with open_gate(settings) as wiring:
            now = SystemClock().now()
            expires_at = _expiry(settings, expires_in_days, no_expiry, now)
            if scope or role:
                await wiring.store.put(
                    Principal(
                        id=principal,
                        scopes=frozenset(scope or ()),
                        roles=frozenset(role or ()),
                    ),
                    kind="service",
                    now=now,
                )
            known = any(p.id == principal for p in wiring.principals) or (
                await wiring.store.get(principal) is not None
            )
            issued = await wiring.keys.create(principal, name=name, now=now, expires_at=expires_at)
            await _record(wiring, "key_create", issued.record, now)
            return issued.key, issued.record, known

    key, record, known = asyncio.run(go())
    now = SystemClock().now()
    if as_json:
        typer.echo(json.dumps({**_key_json(record, now), "key": key}))
    else:
        expiry = record.expires_at.isoformat() if record.expires_at else "never"
        typer.echo(f"Created API key {record.key_id} for {principal!r} (expires: {expiry}).")
        typer.echo("Store it now: it is shown this once and cannot be recovered.\n")
        typer.echo(f"  {key}\n")
    if not known:
        typer.echo(
            f"bastion: note: {principal!r} is not in the database nor the principals file; the "
            "key works only with an app that declares this principal",
            err=True,
        )


@keys_app.command("list")
def list_keys(
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's keys.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List API keys (never the keys themselves): id, principal, name, status, dates."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)

    async def go() -> list[ApiKey]:
        async with open_gate(settings) as wiring:
            return await wiring.keys.list(principal_id=principal)

    keys = asyncio.run(go())
    now = SystemClock().now()
    if as_json:
        for key in keys:
            typer.echo(json.dumps(_key_json(key, now)))
        return
    if not keys:
        typer.echo("No API keys.")
        return
    typer.echo(f"{'KEY ID':<14}{'PRINCIPAL':<16}{'STATUS':<9}{'EXPIRES':<27}NAME")
    for key in keys:
        expires = key.expires_at.isoformat(timespec="seconds") if key.expires_at else "never"
        typer.echo(
            f"{key.key_id:<14}{key.principal_id:<16}{key.status(now).value:<9}{expires:<27}"
            f"{key.name}"
        )


@keys_app.command("revoke")
def revoke(
    key: Annotated[str, typer.Argument(help="The key id (from bastion keys list) or the key.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Revoke an API key: every later request with it is refused."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)
    key_id = key_id_of(key)
    if key_id is None:
        raise ConfigError(f"{key!r} is neither an API key nor a key id (see: bastion keys list)")

    async def go() -> tuple[ApiKey, bool]:
        async with open_gate(settings) as wiring:
            now = SystemClock().now()
            try:
                record = await wiring.keys.revoke(key_id, now=now)
            except LookupError as exc:
                raise ConfigError(str(exc)) from exc
            fresh = record.revoked_at == now
            if fresh:
                await _record(wiring, "key_revoke", record, now)
            return record, fresh

    record, fresh = asyncio.run(go())
    assert record.revoked_at is not None
    when = record.revoked_at.isoformat(timespec="seconds")
    if fresh:
        typer.echo(f"Revoked API key {record.key_id} of {record.principal_id!r}.")
    else:
        typer.echo(f"API key {record.key_id} was already revoked at {when}.")


async def key_owner(settings: Settings, api_key: str) -> str | None:
    """The principal an API key belongs to, per the configured database; None if no key matches.

    The CLI uses it to fill in ``user_id`` when only ``--api-key`` is given; the gate then checks
    the key for real (status, expiry) and records the decision.
    """
    async with open_gate(settings) as wiring:
        return await wiring.keys.owner(api_key)
