"""``bastion memory forget|purge``: retention of what the Memory Manager keeps about users.

``forget --user ID`` deletes everything stored about one user (runs and their history, session
turns, facts, summaries, their API keys and stored principal; `bastion.memory.retention` says
what and why the audit log stays) and records the erasure in the audit log. ``purge`` deletes what
is past the TTLs of the settings (``BASTION_MEMORY__FACT_TTL_DAYS``, ``__TURN_TTL_DAYS``); a
deployment runs it on a schedule. Both work on the database the settings name, migrated first.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer

from bastion.cli.apps import cli_settings
from bastion.cli.keys import _operator, open_gate
from bastion.cli.logs import configure_logging
from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.gate.interface import AuditEntry
from bastion.memory.default import SqlMemory
from bastion.memory.interface import ForgetReport
from bastion.settings import Settings
from bastion.storage.engine import create_engine

memory_app = typer.Typer(
    name="memory",
    help="What Bastion remembers about users: forget a user, purge what has expired.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where Bastion keeps its database and logs.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
_DAY_S = 86400.0


def _memory(settings: Settings) -> SqlMemory:
    # Facts carry their expiry from when they were written; turns expire by the TTL given here.
    ttl = settings.memory.turn_ttl_days
    return SqlMemory(
        engine=create_engine(settings.database_url),
        clock=SystemClock(),
        owns_engine=True,
        turn_ttl_s=ttl and ttl * _DAY_S,
    )


#: Enough for every run one user ever had (the store lists newest first, this many at most).
_ALL_RUNS = 1_000_000


@memory_app.command("forget")
def forget(
    user: Annotated[str, typer.Option("--user", help="The user (principal id) to forget.")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Delete everything stored about USER, for good (the audit log keeps its record)."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)
    if not user.strip():
        raise ConfigError("--user must not be empty")
    if not yes and not typer.confirm(f"Delete everything stored about {user!r}, for good?"):
        raise typer.Abort()

    async def go() -> ForgetReport:
        memory = _memory(settings)
        async with memory:
            runs = await memory.list_runs(user_id=user, limit=_ALL_RUNS)
            report = await memory.forget_user(user)
        if settings.durable.enabled:
            # The durable runs' checkpoints hold the user's requests and results too.
            from bastion.durable import DurableAdmin

            report.deleted["dbos_workflows"] = await DurableAdmin(settings=settings).forget(
                [r.run_id for r in runs], user_id=user
            )
        async with open_gate(settings) as wiring:
            await wiring.audit.append(
                AuditEntry(
                    at=SystemClock().now(),
                    action="memory_forget",
                    decision="allow",
                    principal_id=None,
                    reason=f"forgot user {user} by operator {_operator()} (CLI)",
                    details={"user_id": user, "deleted": report.deleted, "operator": _operator()},
                )
            )
        return report

    report = asyncio.run(go())
    if as_json:
        typer.echo(json.dumps({"user_id": user, "deleted": report.deleted, "total": report.total}))
        return
    if not report.total:
        typer.echo(f"Nothing was stored about {user}.")
        return
    parts = ", ".join(f"{count} from {table}" for table, count in sorted(report.deleted.items()))
    typer.echo(f"Forgot {user}: deleted {report.total} row(s) ({parts}).")


@memory_app.command("purge")
def purge(as_json: JsonOpt = False, data_dir: DataDirOpt = None) -> None:
    """Delete facts, turns and summaries past the TTLs the settings give."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)

    async def go() -> int:
        async with _memory(settings) as memory:
            return await memory.purge_expired()

    removed = asyncio.run(go())
    if as_json:
        typer.echo(json.dumps({"deleted": removed}))
    else:
        typer.echo(f"Deleted {removed} expired row(s).")
