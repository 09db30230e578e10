"""``bastion approvals list|approve|deny``: decide the calls that paused their runs.

Each command authenticates its caller with an API key (``--api-key`` or ``BASTION_API_KEY``; see
``bastion keys create --role approver``), through the app's gate, so the approver's roles are the
ones the app knows (declared in code, in the principals file, or in the database). Deciding goes
through `AgentSystem.approve` / `deny`: the decision is stored and audited, and the run is woken
(durably, through DBOS's system database). This process never launches DBOS: the waiting run
resumes where it runs, or on the next ``bastion worker`` / ``bastion runs resume``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cli.apps import DEFAULT_APP, build_app, cli_settings
from bastion.cli.keys import key_owner
from bastion.cli.logs import configure_logging
from bastion.cli.render import LiveRenderer, dumps, print_response, response_json
from bastion.errors import ConfigError, NotAuthenticated
from bastion.flow.state import EventSink
from bastion.gate.approvals import APPROVER_ROLE, Approval
from bastion.messages import (
    AgentRequest,
    AgentResponse,
    EventKind,
    Principal,
    RunEvent,
    RunStatus,
)
from bastion.settings import Settings
from bastion.system import AgentSystem

T = TypeVar("T")

approvals_app = typer.Typer(
    name="approvals",
    help="Human approvals: list the calls waiting for one, approve or deny them.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

ApiKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--api-key",
        envvar="BASTION_API_KEY",
        help="Your API key (a principal with the approver role).",
    ),
]
AppOpt = Annotated[str, typer.Option("--app", help="The app factory, module:factory.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where Bastion keeps its database and logs.")
]


def _settings(data_dir: Path | None) -> Settings:
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)
    return settings


def _with_approver(
    settings: Settings,
    app_spec: str,
    api_key: str | None,
    act: Callable[[AgentSystem, Principal], Awaitable[T]],
) -> T:
    """Authenticate the key's principal through the app's gate, then `act` as it."""
    if not api_key:
        raise ConfigError(
            "an API key is required: pass --api-key or set BASTION_API_KEY "
            f"(create one with: bastion keys create NAME --role {APPROVER_ROLE})"
        )

    async def go() -> T:
        owner = await key_owner(settings, api_key)
        system = build_app(app_spec, settings)
        try:
            try:
                principal = await system.principal_for_key(api_key, user_id=owner or "unknown")
            except NotAuthenticated as exc:
                raise ConfigError(f"not authenticated: {exc}") from exc
            return await act(system, principal)
        finally:
            await system.close()

    return asyncio.run(go())


def _json(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": approval.approval_id,
        "run_id": approval.run_id,
        "step": approval.step_key,
        "tool": approval.tool_name,
        "args_hash": approval.args_hash,
        "reason": approval.reason,
        "status": approval.status.value,
        "requested_by": approval.requested_by,
        "requested_at": approval.requested_at.isoformat(),
        "expires_at": approval.expires_at.isoformat(),
        "decided_by": approval.decided_by,
    }


@approvals_app.command("list")
def list_approvals(
    run_id: Annotated[str | None, typer.Option("--run", help="Only this run's approvals.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, one line each.")] = False,
    api_key: ApiKeyOpt = None,
    app_spec: AppOpt = DEFAULT_APP,
    data_dir: DataDirOpt = None,
) -> None:
    """List the approvals waiting for a decision, oldest first."""
    settings = _settings(data_dir)

    async def act(system: AgentSystem, principal: Principal) -> list[Approval]:
        if APPROVER_ROLE not in principal.roles:
            raise ConfigError(f"{principal.id} lacks the {APPROVER_ROLE!r} role: nothing to list")
        return await system.approvals_pending(run_id)

    found = _with_approver(settings, app_spec, api_key, act)
    if as_json:
        for approval in found:
            typer.echo(dumps(_json(approval)))
        return
    if not found:
        typer.echo("No approvals are waiting.")
        return
    table = Table("approval", "run", "tool", "asked by", "reason", "expires")
    for a in found:
        table.add_row(
            a.approval_id,
            a.run_id,
            a.tool_name,
            a.requested_by,
            escape(a.reason),
            f"{a.expires_at:%Y-%m-%d %H:%M:%S}",
        )
    Console().print(table)


@approvals_app.command("approve")
def approve(
    approval_id: Annotated[str, typer.Argument(help="The approval's id (bastion approvals list).")],
    note: Annotated[str, typer.Option("--note", help="Why (recorded).")] = "",
    api_key: ApiKeyOpt = None,
    app_spec: AppOpt = DEFAULT_APP,
    data_dir: DataDirOpt = None,
) -> None:
    """Approve one waiting call: its run makes exactly that call, once."""
    settings = _settings(data_dir)

    async def act(system: AgentSystem, principal: Principal) -> Approval:
        return await system.approve(approval_id, principal, note)

    approval = _with_approver(settings, app_spec, api_key, act)
    typer.echo(f"{approval.approval_id} approved by {approval.decided_by}; run {approval.run_id}")


@approvals_app.command("deny")
def deny(
    approval_id: Annotated[str, typer.Argument(help="The approval's id (bastion approvals list).")],
    reason: Annotated[str, typer.Option("--reason", help="Why (shown to the run's planner).")],
    api_key: ApiKeyOpt = None,
    app_spec: AppOpt = DEFAULT_APP,
    data_dir: DataDirOpt = None,
) -> None:
    """Deny one waiting call: its run replans without it, or ends."""
    if not reason.strip():
        raise ConfigError("--reason must say why the call is denied")
    settings = _settings(data_dir)

    async def act(system: AgentSystem, principal: Principal) -> Approval:
        return await system.deny(approval_id, principal, reason)

    approval = _with_approver(settings, app_spec, api_key, act)
    typer.echo(f"{approval.approval_id} denied by {approval.decided_by}; run {approval.run_id}")


# -- bastion run: a run that pauses for an approval lets the process exit ----------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Paused:
    """A run left waiting for a human approval (durably: it resumes elsewhere, later)."""

    run_id: str
    approval_id: str
    reason: str

    def json(self) -> dict[str, Any]:
        """The pause as plain JSON data."""
        return {
            "run_id": self.run_id,
            "status": RunStatus.AWAITING_APPROVAL.value,
            "approval_id": self.approval_id,
            "reason": self.reason,
        }


async def run_or_pause(
    system: AgentSystem, request: AgentRequest, on_event: EventSink | None
) -> AgentResponse | Paused:
    """Run `request`; if it pauses for an approval, leave it (durable) and say so.

    A short-lived ``bastion run`` must not wait days for a person: once the run has asked for
    its approval (checkpointed), this process stops running it without cancelling it; after the
    decision, ``bastion runs resume RUN`` (or a worker taking it over) finishes it.
    """
    durable = system.durable
    asked: dict[str, Any] = {}
    paused = asyncio.Event()

    def sink(event: RunEvent) -> None:
        if on_event is not None:
            on_event(event)
        if event.kind is EventKind.APPROVAL and event.data.get("state") == "requested":
            asked.update(event.data)
            paused.set()

    running = asyncio.create_task(system.run(request, on_event=sink))
    waiting = asyncio.create_task(paused.wait())
    await asyncio.wait({running, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if running.done():
        waiting.cancel()
        return running.result()
    if durable is None:
        # In process nobody else could ever answer: the run is cancelled, not left hanging.
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        raise ConfigError(
            "this run needs a human approval, which a run without durable execution cannot "
            "wait for from the command line: it was cancelled (enable BASTION_DURABLE__ENABLED)"
        )
    # Leave the run as a shutdown does: its workflow stays pending, recoverable, not cancelled.
    await durable.leave(request.run_id)
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    return Paused(
        run_id=request.run_id,
        approval_id=str(asked.get("approval_id")),
        reason=str(asked.get("reason", "")),
    )


#: ``bastion run``'s exit code when the run paused for an approval (0 done, 1 not done, 2 usage).
EXIT_PAUSED = 3


async def run_one(
    settings: Settings, app_spec: str, request: AgentRequest, *, as_json: bool
) -> AgentResponse | Paused:
    """``bastion run``: one request, shown as it happens; a pause for approval ends the process."""
    console = Console(highlight=False)
    system = build_app(app_spec, settings)
    async with system:
        if not as_json:
            console.print(f"\n[bold]{escape(request.user_id)}[/] asks: {escape(request.message)}")
        outcome = await run_or_pause(system, request, None if as_json else LiveRenderer(console))
    if isinstance(outcome, Paused):
        if as_json:
            typer.echo(dumps(outcome.json()))
        else:
            console.print(
                f"  [yellow]awaiting approval[/] {outcome.approval_id}: {escape(outcome.reason)}\n"
                f"  an approver decides with: bastion approvals approve {outcome.approval_id} "
                f"(or deny ... --reason); then: bastion runs resume {outcome.run_id}"
            )
    elif as_json:
        typer.echo(dumps(response_json(outcome)))
    else:
        print_response(console, outcome)
    return outcome
