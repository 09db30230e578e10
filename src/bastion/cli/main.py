"""The `bastion` command: run a request, run the demo, print the version.

Exit codes: 0 a completed run (or runs), 1 a run that did not complete, 2 a usage or configuration
error. Every error is one line on stderr, never a traceback; details go to the log file in the data
directory (``bastion.log``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import tempfile
import uuid
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from bastion.cli.approvals import EXIT_PAUSED, Paused, approvals_app, run_one
from bastion.cli.apps import DEFAULT_APP, build_app, cli_settings
from bastion.cli.audit import audit_app
from bastion.cli.doctor import doctor
from bastion.cli.keys import key_owner, keys_app
from bastion.cli.logs import configure_logging
from bastion.cli.memory import memory_app
from bastion.cli.models_cmd import models_app
from bastion.cli.render import LiveRenderer, dumps, print_response, response_json
from bastion.cli.runs import runs_app, worker
from bastion.cli.serve import serve
from bastion.cli.status import status
from bastion.cli.usage import usage
from bastion.errors import BastionError, ConfigError
from bastion.gate.wiring import redactor_for
from bastion.messages import AgentRequest, AgentResponse, RunEvent
from bastion.settings import Settings

app = typer.Typer(
    name="bastion",
    help="Bastion: a production-hardened runtime for LLM agents.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

EXIT_OK, EXIT_RUN_FAILED, EXIT_USAGE = 0, 1, 2

AppOpt = Annotated[str, typer.Option("--app", help="The app factory, module:factory.")]
ModelOpt = Annotated[
    str | None, typer.Option("--model", help="provider:model, e.g. openai:gpt-4o-mini.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object per run.")]
DataDirOpt = Annotated[
    Path | None, typer.Option("--data-dir", help="Where Bastion keeps its database and logs.")
]


def _version() -> str:
    try:
        return version("bastion-agents")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"bastion {_version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Show version."),
    ] = False,
) -> None:
    """Bastion: a production-hardened runtime for LLM agents."""


def _parse_budget(budget: str) -> Decimal:
    try:
        value = Decimal(budget)
    except InvalidOperation:
        raise ConfigError(f"--budget must be a number of USD, got {budget!r}") from None
    if not value.is_finite() or value < 0:
        raise ConfigError(f"--budget must be a non-negative number of USD, got {budget!r}")
    return value


def _fan_out(*sinks: Callable[[RunEvent], None] | None) -> Callable[[RunEvent], None] | None:
    """One event sink that hands each event to every sink given (None: no sink at all)."""
    present = [sink for sink in sinks if sink is not None]
    if len(present) < 2:
        return present[0] if present else None

    def each(event: RunEvent) -> None:
        for sink in present:
            sink(event)

    return each


async def _run_requests(
    settings: Settings,
    app_spec: str,
    requests: list[AgentRequest],
    *,
    as_json: bool,
    also: Callable[[RunEvent], None] | None = None,
) -> list[AgentResponse]:
    console = Console(stderr=False, highlight=False)
    system = build_app(app_spec, settings)
    responses = []
    on_event = _fan_out(None if as_json else LiveRenderer(console), also)
    async with system:
        for request in requests:
            if not as_json:
                console.print(
                    f"\n[bold]{escape(request.user_id)}[/] asks: {escape(request.message)}"
                )
            response = await system.run(request, on_event=on_event)
            responses.append(response)
            if as_json:
                typer.echo(dumps(response_json(response)))
            else:
                print_response(console, response)
    return responses


@app.command()
def run(
    message: Annotated[str, typer.Argument(help="What the user asks.")],
    app_spec: AppOpt = DEFAULT_APP,
    user: Annotated[
        str | None,
        typer.Option("--user", help="Who asks (a principal id; default: the key's, else c1)."),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="BASTION_API_KEY", help="An API key (bastion keys)."),
    ] = None,
    session: Annotated[
        str | None, typer.Option("--session", help="Session id (default: a new one).")
    ] = None,
    budget: Annotated[str, typer.Option("--budget", help="Run budget in USD.")] = "1.00",
    model: ModelOpt = None,
    timeout: Annotated[
        float | None, typer.Option("--timeout", min=0.001, help="Run time limit in seconds.")
    ] = None,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
    detach: Annotated[
        bool, typer.Option("--detach", help="Queue the run for a worker and print its id.")
    ] = False,
) -> None:
    """Run one request through an agent app and print the answer."""
    settings = cli_settings(model=model, data_dir=data_dir)
    configure_logging(settings.data_dir, redactor=redactor_for(settings))
    if user is None:  # the key's owner; a key matching none is refused, and audited, by the gate
        owner = asyncio.run(key_owner(settings, api_key)) if api_key else None
        user = owner or ("c1" if api_key is None else "unknown")
    try:
        request = AgentRequest(
            user_id=user,
            api_key=api_key,
            session_id=session or f"cli_{uuid.uuid4().hex[:12]}",
            message=message,
            max_budget_usd=_parse_budget(budget),
            timeout_s=timeout,
        )
    except ValueError as exc:
        raise ConfigError(f"invalid request: {exc}") from exc
    if detach:
        _detach(settings, request, as_json=as_json)
        return
    outcome = asyncio.run(run_one(settings, app_spec, request, as_json=as_json))
    if isinstance(outcome, Paused):  # durable: the process exits, the run waits for a person
        raise typer.Exit(EXIT_PAUSED)
    raise typer.Exit(EXIT_OK if outcome.ok else EXIT_RUN_FAILED)


def _detach(settings: Settings, request: AgentRequest, *, as_json: bool) -> None:
    from datetime import UTC, datetime, timedelta

    from bastion.durable import DurableAdmin

    timeout_s = request.timeout_s or settings.run.timeout_s
    deadline_at = datetime.now(UTC) + timedelta(seconds=timeout_s)  # noqa: TID251 - CLI edge
    run_id = asyncio.run(DurableAdmin(settings=settings).enqueue(request, deadline_at=deadline_at))
    typer.echo(dumps({"run_id": run_id, "status": "queued"}) if as_json else run_id)


#: How long the demo's refund above the cap waits for an approval nobody gives.
DEMO_APPROVAL_WAIT_S = 3.0


@app.command()
def demo(
    as_json: JsonOpt = False,
    model: ModelOpt = None,
    data_dir: DataDirOpt = None,
    cascade: Annotated[
        bool,
        typer.Option(
            "--cascade",
            help="Plan with a cascade (a cheap tier, then the demo's model) and report its"
            " saving against always-strong, at the list prices of the hosted models the tiers"
            " stand for.",
        ),
    ] = False,
) -> None:
    """Run the customer-support demo: several requests end to end, shown as they happen.

    The demo uses a fresh shop database each time (in a temporary directory unless --data-dir is
    given), so its refunds and tickets start from the same seed data on every run.
    """
    from bastion.cost.pricing import PriceTable
    from bastion.demo.support import cascade as demo_cascade
    from bastion.demo.support.app import choose_model
    from bastion.demo.support.requests import DEMO_REQUESTS

    # A fresh shop each time, but local model weights stay where they were assembled and verified.
    base = cli_settings(model=model, data_dir=data_dir)
    local = base.local.model_copy(update={"cache_dir": base.local_cache_dir})
    with tempfile.TemporaryDirectory(prefix="bastion-demo-") as tmp:
        # Nobody approves in the demo: a refund above the cap waits briefly, then is escalated.
        gate = base.gate.model_copy(update={"approval_ttl_s": DEMO_APPROVAL_WAIT_S})
        settings = base.model_copy(
            update={"data_dir": data_dir or Path(tmp), "local": local, "gate": gate}
        )
        configure_logging(settings.data_dir)
        tiers = demo_cascade.choose_cascade(settings) if cascade else ()
        if tiers:
            settings = demo_cascade.with_cascade(settings, tiers)
            line = demo_cascade.describe_tiers(tiers)
            typer.echo(f"Planning with a cascade: {line}.", err=as_json)
        else:
            choice = choose_model(settings)
            typer.echo(f"Planning with {choice.name}: {choice.why}.", err=as_json)
        requests = [
            AgentRequest(user_id=r.user_id, session_id=r.session_id, message=r.message)
            for r in DEMO_REQUESTS
        ]
        tally = demo_cascade.CascadeTally()
        responses = asyncio.run(
            _run_requests(settings, DEFAULT_APP, requests, as_json=as_json, also=tally)
        )
    if not as_json:
        done = sum(r.ok for r in responses)
        typer.echo(f"\n{done} of {len(responses)} demo runs completed.")
    if tiers:
        report = demo_cascade.cascade_report(
            tally,
            tiers,
            PriceTable(settings.cost),
            requests={r.run_id: r.message for r in requests},
        )
        if as_json:
            typer.echo(dumps({"cascade_report": demo_cascade.report_json(report)}))
        else:
            typer.echo("\n" + "\n".join(demo_cascade.render_report(report)))
    # Some demo runs are refused on purpose (another customer's order): that is the demo working.
    raise typer.Exit(EXIT_OK)


app.add_typer(runs_app)
app.add_typer(keys_app)
app.add_typer(audit_app)
app.add_typer(approvals_app)
app.add_typer(models_app)
app.add_typer(memory_app)
app.command("worker")(worker)
app.command("doctor")(doctor)
app.command("status")(status)
app.command("serve")(serve)
app.command("usage")(usage)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and turn every error into one line and an exit code."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="bastion", standalone_mode=False)
    except typer.Exit as exc:
        return exc.exit_code
    except TyperException as exc:  # usage errors: a bad flag, a missing argument
        print(f"bastion: error: {exc.format_message()} (see bastion --help)", file=sys.stderr)
        return EXIT_USAGE
    except typer.Abort:
        print("bastion: aborted", file=sys.stderr)
        return EXIT_RUN_FAILED
    except BastionError as exc:
        print(f"bastion: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("bastion: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        logging.getLogger("bastion").exception("unexpected CLI failure")
        print(f"bastion: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_RUN_FAILED
    # With standalone_mode off, an Exit raised by a command comes back as its code.
    return result if isinstance(result, int) else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
