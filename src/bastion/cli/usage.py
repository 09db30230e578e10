"""``bastion usage``: spend, tokens, calls and denials from the cost ledger, grouped.

Reads the same ledger the budgets are enforced on (`bastion.cost.usage_report`), so what it shows
is what was charged. ``--since`` takes a date (``2026-11-01``, from midnight UTC) or an ISO
datetime (UTC when it names no zone).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated

import typer

from bastion.cli.apps import cli_settings
from bastion.cli.keys import DataDirOpt, JsonOpt
from bastion.cli.logs import configure_logging
from bastion.cli.render import usd
from bastion.cost.usage import GroupBy, UsageLine, usage_report
from bastion.storage.engine import create_engine


def parse_since(value: str) -> datetime:
    """A ``--since`` value as an aware UTC datetime.

    Raises:
        typer.BadParameter: neither a date nor an ISO datetime.
    """
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date: use YYYY-MM-DD or an ISO datetime", param_hint="--since"
        ) from exc
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def usage(
    user: Annotated[str | None, typer.Option("--user", help="Only this user's calls.")] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From this date (YYYY-MM-DD, UTC) or datetime.")
    ] = None,
    by: Annotated[GroupBy, typer.Option("--by", help="Group by model, user or app.")] = "model",
    as_json: JsonOpt = False,
    data_dir: DataDirOpt = None,
) -> None:
    """Spend, tokens, calls and denied calls from the cost ledger."""
    start = None if since is None else parse_since(since)
    settings = cli_settings(data_dir=data_dir)
    configure_logging(settings.data_dir)

    async def go() -> list[UsageLine]:
        engine = create_engine(settings.database_url)
        try:
            return await usage_report(engine, user=user, since=start, by=by)
        finally:
            await engine.dispose()

    lines = asyncio.run(go())
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "by": by,
                    "user": user,
                    "since": None if start is None else start.isoformat(),
                    "lines": [_as_json(line) for line in lines],
                    "total_cost_usd": usd(sum((ln.cost_usd for ln in lines), Decimal(0))),
                }
            )
        )
        return
    if not lines:
        typer.echo("no usage recorded" + ("" if user is None else f" for user {user!r}"))
        return
    header = (
        f"{by:<32} {'calls':>7} {'denied':>7} {'input tok':>11} {'cached tok':>11} "
        f"{'output tok':>11} {'cost USD':>14}"
    )
    typer.echo(header)
    for line in lines:
        typer.echo(
            f"{line.key[:32]:<32} {line.calls:>7} {line.denials:>7} {line.input_tokens:>11} "
            f"{line.cached_input_tokens:>11} {line.output_tokens:>11} {usd(line.cost_usd):>14}"
        )
    total = sum((ln.cost_usd for ln in lines), Decimal(0))
    typer.echo(
        f"{'total':<32} {sum(ln.calls for ln in lines):>7} "
        f"{sum(ln.denials for ln in lines):>7} "
        f"{sum(ln.input_tokens for ln in lines):>11} "
        f"{sum(ln.cached_input_tokens for ln in lines):>11} "
        f"{sum(ln.output_tokens for ln in lines):>11} {usd(total):>14}"
    )


def _as_json(line: UsageLine) -> dict[str, object]:
    return {
        "key": line.key,
        "calls": line.calls,
        "denials": line.denials,
        "input_tokens": line.input_tokens,
        "cached_input_tokens": line.cached_input_tokens,
        "output_tokens": line.output_tokens,
        "cost_usd": usd(line.cost_usd),
    }
