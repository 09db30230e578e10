"""``bastion runs list|show|cancel|resume`` and ``bastion worker``: durable runs from the shell.

Listing and showing read Bastion's run store; cancelling, resuming and queueing go through
`DurableAdmin` (DBOS's system database), so none of them launches DBOS in a short-lived process,
which would recover other processes' runs and then abandon them. ``resume`` and ``worker`` do run
workflows, and run them to their end.
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.cli.apps import DEFAULT_APP, build_app, cli_settings
from bastion.cli.logs import configure_logging
from bastion.cli.render import dumps, print_response, response_json, usd
from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.memory.default import SqlMemory
from bastion.memory.interface import RunRecord
from bastion.messages import RunStatus
from bastion.settings import Settings

runs_app = typer.Typer(
    name="runs", help="List, inspect, cancel and resume runs.", no_args_is_help=True
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where Bastion keeps its database and logs.")
]
AppOpt = Annotated[str, typer.Option("--app", help="The app factory, module:factory.")]


def _settings(data_dir: Path | None) -> Settings:
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)
    return settings


async def _store(settings: Settings) -> SqlMemory:
    memory = SqlMemory.from_url(settings.database_url, clock=SystemClock())
    await memory.start()
    return memory


def _header(record: RunRecord) -> dict[str, Any]:
    return {
        "run_id": record.run_id,
        "status": record.status.value,
        "user_id": record.user_id,
        "session_id": record.session_id,
        "request": record.request_message,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "answer": record.answer,
        "error": record.error,
        "total_cost_usd": usd(record.total_cost_usd),
        "model": record.model,
    }


@runs_app.command("list")
def list_runs(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's runs.")] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only runs in this status.")
    ] = None,
    stranded: Annotated[
        bool, typer.Option("--stranded", help="Unfinished runs of another workflow version.")
    ] = False,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 50,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """List runs, newest first."""
    settings = _settings(data_dir)
    if stranded:
        _list_stranded(settings, as_json=as_json)
        return
    try:
        wanted = RunStatus(status) if status else None
    except ValueError:
        choices = ", ".join(s.value for s in RunStatus)
        raise ConfigError(f"--status must be one of {choices}, got {status!r}") from None

    async def go() -> list[RunRecord]:
        memory = await _store(settings)
        try:
            return await memory.list_runs(user_id=user, status=wanted, limit=limit)
        finally:
            await memory.close()

    records = asyncio.run(go())
    if as_json:
        for record in records:
            typer.echo(dumps(_header(record)))
        return
    table = Table("run", "status", "user", "request", "cost", "updated")
    for r in records:
        table.add_row(
            r.run_id,
            r.status.value,
            r.user_id,
            escape(r.request_message[:60]),
            f"${usd(r.total_cost_usd)}",
            f"{r.updated_at:%Y-%m-%d %H:%M:%S}",
        )
    Console().print(table)


def _list_stranded(settings: Settings, *, as_json: bool) -> None:
    from bastion.durable import DurableAdmin

    found = asyncio.run(DurableAdmin(settings=settings).stranded())
    for w in found:
        line = {
            "run_id": w.run_id,
            "status": w.status,
            "workflow_version": w.app_version,
            "executor_id": w.executor_id,
            "created_at": w.created_at.isoformat() if w.created_at else None,
        }
        typer.echo(dumps(line) if as_json else f"{w.run_id}  {w.status}  version {w.app_version}")
    if not as_json and not found:
        typer.echo("No stranded runs.")


@runs_app.command("show")
def show_run(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Show a run: its status, plan, steps, events and answer."""
    settings = _settings(data_dir)

    async def go() -> RunRecord | None:
        memory = await _store(settings)
        try:
            return await memory.get_run(run_id)
        finally:
            await memory.close()

    record = asyncio.run(go())
    if record is None:
        raise ConfigError(
            f"no run {run_id!r} in {settings.data_dir} (queued runs show once started)"
        )
    data = _header(record)
    data["steps"] = [
        {
            "step_id": s.step.step_id,
            "tool_name": s.tool_name or s.step.tool_name,
            "status": s.status.value,
            "attempts": s.attempts,
            "result": s.outcome.value if s.outcome and s.outcome.ok else None,
            "error": s.outcome.error if s.outcome and not s.outcome.ok else None,
        }
        for s in record.steps
    ]
    data["events"] = [
        {"seq": e.seq, "kind": e.kind.value, "at": e.at.isoformat(), **dict(e.data)}
        for e in record.events
    ]
    if as_json:
        typer.echo(dumps(data))
        return
    console = Console(highlight=False)
    console.print(f"[bold]{record.run_id}[/] {record.status.value} · {escape(record.user_id)}")
    console.print(f"  asked: {escape(record.request_message)}")
    for step in data["steps"]:
        outcome = step["error"] or step["result"]
        console.print(
            f"  {step['step_id']}. {step['tool_name']} {step['status']}: {escape(str(outcome))}"
        )
    if record.answer:
        console.print(f"  answer: {escape(record.answer)}")


@runs_app.command("cancel")
def cancel_run(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    data_dir: DataDirOpt = None,
) -> None:
    """Cancel a run: it stops at its next step boundary."""
    from bastion.durable import DurableAdmin

    settings = _settings(data_dir)
    try:
        asyncio.run(DurableAdmin(settings=settings).cancel(run_id))
    except KeyError:
        raise ConfigError(f"no durable run {run_id!r}") from None
    typer.echo(f"{run_id} cancelled")


@runs_app.command("resolve")
def resolve_run(
    run_id: Annotated[str, typer.Argument(help="The run awaiting an operator.")],
    action: Annotated[
        str,
        typer.Option(
            "--action",
            help="retry: run the call again; skip: it did happen, go on; abort: end the run.",
        ),
    ],
    by: Annotated[str, typer.Option("--by", help="Who decides (recorded).")] = "operator",
    note: Annotated[str, typer.Option("--note", help="Why (recorded).")] = "",
    data_dir: DataDirOpt = None,
) -> None:
    """Decide what a run awaiting an operator does about a call whose outcome is unknown."""
    from bastion.durable import DurableAdmin
    from bastion.flow.execute import OPERATOR_TOPIC

    if action not in ("retry", "skip", "abort"):
        raise ConfigError(f"--action must be retry, skip or abort, got {action!r}")
    settings = _settings(data_dir)
    message = {"action": action, "by": by, "note": note}
    key = f"{run_id}:operator:{uuid.uuid4().hex}"
    try:
        asyncio.run(DurableAdmin(settings=settings).send(run_id, OPERATOR_TOPIC, message, key=key))
    except KeyError:
        raise ConfigError(f"no durable run {run_id!r}") from None
    typer.echo(f"{run_id}: {action} sent")


@runs_app.command("resume")
def resume_run(
    run_id: Annotated[str, typer.Argument(help="The run's id.")],
    app_spec: AppOpt = DEFAULT_APP,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Resume an interrupted, cancelled or stranded run here, and wait for its end.

    Its completed steps are not run again.
    """
    from bastion.durable import DurableAdmin

    settings = _settings(data_dir)

    async def go() -> Any:
        try:
            await DurableAdmin(settings=settings).resume(run_id)
        except KeyError:
            raise ConfigError(f"no unfinished durable run {run_id!r}") from None
        system = build_app(app_spec, settings)
        if system.durable is None:
            raise ConfigError("this app runs without durable execution: nothing to resume")
        async with system:
            return await system.durable.wait(run_id)

    response = asyncio.run(go())
    if as_json:
        typer.echo(dumps(response_json(response)))
    else:
        print_response(Console(highlight=False), response)
    raise typer.Exit(0 if response.ok else 1)


def worker(
    app_spec: AppOpt = DEFAULT_APP,
    concurrency: Annotated[
        int | None, typer.Option("--concurrency", min=1, help="Runs at once in this worker.")
    ] = None,
    worker_id: Annotated[
        str | None,
        typer.Option("--id", help="Stable executor id: a restarted worker resumes its runs."),
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Take queued runs (``bastion run --detach``) until stopped with Ctrl-C or SIGTERM."""
    settings = _settings(data_dir)
    durable = settings.durable.model_copy(
        update={
            "enabled": True,
            **({"executor_id": worker_id} if worker_id else {}),
            **({"worker_concurrency": concurrency} if concurrency else {}),
        }
    )
    settings = settings.model_copy(update={"durable": durable})
    asyncio.run(_serve(settings, app_spec))


async def _serve(settings: Settings, app_spec: str) -> None:
    system = build_app(app_spec, settings)
    if system.durable is None:  # pragma: no cover - forced on above
        raise ConfigError("a worker needs durable execution")
    system.durable.serve_queue = True
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with system:
        typer.echo(f"worker {system.durable.executor_id} ready", err=True)
        await stop.wait()
    typer.echo(f"worker {system.durable.executor_id} stopped", err=True)
