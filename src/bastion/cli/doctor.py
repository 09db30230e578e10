"""``bastion doctor``: which sandbox tiers work on this machine, and why the others do not.

Two checks per tier. The probe (`bastion.sandbox.capabilities.probe_capabilities`) tries each
mechanism: root, util-linux ``unshare`` making PID, mount and network namespaces, a pids cgroup
made and removed, bubblewrap starting the interpreter. Then, unless ``--no-call``, a real call of a
trivial tool goes through every available isolated tier, so that "available" means "a tool ran
there just now", with how long it took.

Exit code 0 when every tier works, 1 when one does not (scripts and CI can check), never a
traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from bastion.cli.render import dumps
from bastion.clock import SystemClock
from bastion.messages import Principal, ToolCall
from bastion.router.interface import SandboxTier
from bastion.router.registry import make_tool
from bastion.sandbox import probe
from bastion.sandbox.capabilities import Capabilities, TierSupport, probe_capabilities
from bastion.sandbox.default import TieredSandbox
from bastion.settings import SandboxSettings

_TIERS: tuple[SandboxTier, ...] = ("inline", "process", "os")
_CALL_TIMEOUT_S = 30.0


async def _call_each(caps: Capabilities) -> dict[SandboxTier, dict[str, Any]]:
    """Run `probe.echo` once on every available tier: its result, or why it failed."""
    sandbox = TieredSandbox(
        clock=SystemClock(), settings=SandboxSettings(warm_workers=0), capabilities=caps
    )
    checks: dict[SandboxTier, dict[str, Any]] = {}
    try:
        for tier in _TIERS:
            if not caps.support(tier).available:
                continue
            # Declared inline, then moved: the tier was just checked by this probe, not the cache.
            spec = dataclasses.replace(make_tool(probe.echo, name=f"echo_{tier}"), sandbox=tier)
            call = ToolCall(run_id="doctor", step_id=1, tool_name=spec.name, args={"value": 7})
            started = time.perf_counter()
            outcome = await sandbox.run(
                call,
                spec,
                deadline=SystemClock().monotonic() + _CALL_TIMEOUT_S,
                principal=Principal(id="doctor"),
            )
            elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
            if outcome.ok and outcome.value == 7:
                checks[tier] = {"ok": True, "ms": elapsed_ms}
            else:
                checks[tier] = {"ok": False, "error": outcome.error or repr(outcome.value)}
    finally:
        await sandbox.aclose()
    return checks


def _report(support: TierSupport, check: dict[str, Any] | None) -> dict[str, Any]:
    works = support.available and (check is None or check["ok"])
    entry: dict[str, Any] = {"works": works, "available": support.available}
    if support.available:
        entry["how"] = list(support.details)
    else:
        entry["why_not"] = list(support.reasons)
    if check is not None:
        entry["call"] = check
    return entry


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    call: Annotated[
        bool, typer.Option("--call/--no-call", help="Also run a trivial tool on each tier.")
    ] = True,
) -> None:
    """Report which sandbox tiers (inline, process, os) work on this machine, and why not."""
    caps = probe_capabilities()
    checks = asyncio.run(_call_each(caps)) if call else {}
    report = {tier: _report(caps.support(tier), checks.get(tier)) for tier in _TIERS}
    all_work = all(entry["works"] for entry in report.values())
    if as_json:
        typer.echo(dumps({"tiers": report, "all_work": all_work}))
    else:
        console = Console(highlight=False, soft_wrap=True)
        for tier, entry in report.items():
            state = "[green]works[/]" if entry["works"] else "[red]unavailable[/]"
            console.print(f"[bold]{tier:8}[/] {state}")
            for line in entry.get("how", []):
                console.print(f"         {escape(line)}")
            for line in entry.get("why_not", []):
                console.print(f"         - {escape(line)}")
            if "call" in entry:
                result = entry["call"]
                cold = " (a cold start)" if tier != "inline" else ""
                said = f"a call took {result['ms']} ms{cold}" if result["ok"] else result["error"]
                console.print(f"         {escape(said)}")
        if not all_work:
            console.print(
                "\nTools asking for an unavailable tier are refused at registration; "
                "they never run on a weaker one."
            )
    raise typer.Exit(0 if all_work else 1)
