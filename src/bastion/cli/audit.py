"""``bastion audit verify|show|checkpoint``: prove the audit log untouched, read it, pin its end.

``verify`` checks every entry's position, link, MAC and columns with the audit key derived from the
server secret, then the checkpoints of ``--checkpoint FILE`` (by default the configured checkpoint
file, when it exists). Exit 0: intact; exit 1: tampered, naming the first bad entry and why; exit
2: it could not be checked (no database, no secret, unreadable file).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from bastion.cli.apps import cli_settings
from bastion.cli.keys import DataDirOpt, JsonOpt, open_gate
from bastion.cli.logs import configure_logging
from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.gate.audit import AuditFilter, StoredEntry, VerifyReport, verify
from bastion.gate.checkpoints import CheckpointFile, read_checkpoints

audit_app = typer.Typer(
    name="audit",
    help="The audit log: verify it, show it, checkpoint it.",
    no_args_is_help=True,
    rich_markup_mode=None,
)

EXIT_TAMPERED = 1

CheckpointOpt = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint", help="Checkpoint file to verify against (default: the configured one)."
    ),
]


@audit_app.command("verify")
def verify_command(
    checkpoint: CheckpointOpt = None, as_json: JsonOpt = False, data_dir: DataDirOpt = None
) -> None:
    """Verify the audit log; exit 1 naming the first bad entry if it was tampered with."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)

    async def go() -> tuple[VerifyReport, CheckpointFile | None]:
        async with open_gate(settings) as wiring:
            path = checkpoint
            if path is None and wiring.checkpoint_file.exists():
                path = wiring.checkpoint_file
            checkpoints = None if path is None else read_checkpoints(path, key=wiring.audit_key)
            entries = await wiring.audit.read_chain()
            report = verify(
                entries,
                key=wiring.audit_key,
                checkpoints=() if checkpoints is None else checkpoints.checkpoints,
            )
            return report, checkpoints

    report, checkpoints = asyncio.run(go())
    problems = list(checkpoints.problems) if checkpoints else []
    ok = report.ok and not problems
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "ok": ok,
                    "entries": report.entries,
                    "first_bad": report.first_bad,
                    "problem": report.problem,
                    "checkpoint_file": str(checkpoints.path) if checkpoints else None,
                    "checkpoints": len(checkpoints.checkpoints) if checkpoints else 0,
                    "checkpoints_matched": report.checkpoints_matched,
                    "checkpoint_problems": problems,
                }
            )
        )
    else:
        _print_report(report, checkpoints, problems)
    if not ok:
        raise typer.Exit(EXIT_TAMPERED)


def _print_report(
    report: VerifyReport, checkpoints: CheckpointFile | None, problems: list[str]
) -> None:
    if report.first_bad is not None:
        typer.echo(
            f"audit log TAMPERED: entry {report.first_bad} is the first bad entry: {report.problem}"
        )
    else:
        typer.echo(f"audit log intact: {report.entries} entries verified (MACs, links, columns)")
    if checkpoints is None:
        typer.echo(
            "no checkpoint file: a cut-off tail or a restored older copy cannot be detected "
            "(write one with: bastion audit checkpoint)"
        )
    else:
        typer.echo(
            f"checkpoints ({checkpoints.path}): {report.checkpoints_matched} of "
            f"{len(checkpoints.checkpoints)} matched"
        )
        if checkpoints.torn_tail:
            typer.echo("  note: its last line is incomplete (a write cut short) and was skipped")
    for problem in problems:
        typer.echo(f"checkpoint file TAMPERED: {problem}")


@audit_app.command("show")
def show(
    run: Annotated[str | None, typer.Option("--run", help="Only this run's entries.")] = None,
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only this principal's entries.")
    ] = None,
    tool: Annotated[str | None, typer.Option("--tool", help="Only this tool's entries.")] = None,
    decision: Annotated[
        Literal["allow", "deny"] | None,
        typer.Option("--decision", help="Only allow or only deny."),
    ] = None,
    action: Annotated[
        str | None,
        typer.Option("--action", help="authenticate, authorize, budget, key_create, ..."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="The newest N entries.")] = 50,
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Show the newest audit entries (oldest first), filtered by run, principal, tool, decision."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)
    where = AuditFilter(
        run_id=run, principal_id=principal, tool_name=tool, decision=decision, action=action
    )

    async def go() -> list[StoredEntry]:
        async with open_gate(settings) as wiring:
            return await wiring.audit.query(where, limit=limit)

    rows = asyncio.run(go())
    for row in rows:
        typer.echo(json.dumps(_row_json(row), ensure_ascii=False) if as_json else _row_line(row))
    if not rows and not as_json:
        typer.echo("No audit entries match.")


def _row_json(row: StoredEntry) -> dict[str, Any]:
    try:
        return json.loads(row.body)  # type: ignore[no-any-return]
    except ValueError:
        return {"seq": row.seq, "body": row.body, "unreadable": True}


def _row_line(row: StoredEntry) -> str:
    body = _row_json(row)
    parts = [
        f"#{row.seq}",
        row.at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        f"{row.decision:<5}",
        row.action,
        f"principal={row.principal_id or '-'}",
    ]
    if row.tool_name:
        parts.append(f"tool={row.tool_name}")
    if body.get("stage"):
        parts.append(f"stage={body['stage']}")
    if row.run_id:
        parts.append(f"run={row.run_id}")
    return " ".join(parts) + f": {body.get('reason', '')}"


@audit_app.command("checkpoint")
def checkpoint_command(
    out: Annotated[
        Path | None, typer.Option("--out", help="File to append to (default: the configured one).")
    ] = None,
    data_dir: DataDirOpt = None,
) -> None:
    """Append a checkpoint (the log's size and last MAC) to the checkpoint file, now."""
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)

    async def go() -> tuple[Path, int | None]:
        async with open_gate(settings) as wiring:
            path = out or wiring.checkpoint_file
            try:
                written = await wiring.audit.checkpoint(path, at=SystemClock().now())
            except OSError as exc:
                raise ConfigError(f"cannot write the checkpoint file {str(path)!r}: {exc}") from exc
            return path, None if written is None else written.size

    path, size = asyncio.run(go())
    if size is None:
        typer.echo("The audit log is empty: nothing to checkpoint.")
    else:
        typer.echo(f"Checkpoint of {size} entries appended to {path}.")
