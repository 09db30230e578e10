"""How runs look in a terminal (Rich, live as events arrive) and as JSON (one object per run)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.markup import escape

from bastion.messages import AgentResponse, EventKind, RunEvent, RunStatus, StepStatus

_STATUS_STYLE = {
    RunStatus.COMPLETED: "bold green",
    RunStatus.FAILED: "bold red",
    RunStatus.ABORTED: "bold yellow",
    RunStatus.CANCELLED: "bold yellow",
}


def usd(amount: Decimal) -> str:
    """An exact amount as plain decimal text: ``0``, ``0.000123`` (never ``0E-8``)."""
    return format(amount.normalize(), "f")


def response_json(response: AgentResponse) -> dict[str, Any]:
    """The run as plain JSON data. Money is a decimal string, so it stays exact."""
    steps = []
    for step in response.plan.steps if response.plan else ():
        item: dict[str, Any] = {
            "step_id": step.step_id,
            "description": step.description,
            "tool_name": step.tool_name,
            "tool_args": dict(step.tool_args),
            "status": step.status.value,
        }
        if step.status is StepStatus.SUCCESS:
            item["result"] = step.result
        elif step.error is not None:
            item["error"] = step.error
        steps.append(item)
    return {
        "run_id": response.run_id,
        "status": response.status.value,
        "message": response.message,
        "steps": steps,
        "total_cost_usd": usd(response.total_cost_usd),
        "model": response.model,
        "model_reason": response.model_reason,
        "input_tokens": response.input_tokens,
        "output_tokens": response.output_tokens,
        "error": response.error,
    }


def dumps(data: dict[str, Any]) -> str:
    """One line of JSON."""
    return json.dumps(data, default=str, ensure_ascii=False)


class LiveRenderer:
    """Prints a run's events as they happen: the plan, each step, retries, denials."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: RunEvent) -> None:
        d = event.data
        out = self.console.print
        match event.kind:
            case EventKind.PLAN:
                steps = d.get("steps", [])
                label = "plan" if d.get("revision", 0) == 0 else f"new plan (#{d['revision']})"
                out(f"  [cyan]{label}[/]: {len(steps)} step(s) — {escape(str(d.get('reasoning')))}")
                for s in steps:
                    out(f"    {s['step_id']}. {escape(s['tool_name'])}: {escape(s['description'])}")
            case EventKind.STEP_FINISHED:
                mark = "[green]✓[/]" if d.get("ok") else "[red]✗[/]"
                detail = "" if d.get("ok") else f" — {escape(str(d.get('error')))}"
                ms = float(d.get("duration_s") or 0) * 1000
                out(f"  {mark} step {d['step_id']} {escape(d['tool_name'])} ({ms:.0f} ms){detail}")
            case EventKind.RETRY:
                out(f"  [yellow]↻ retry in {d.get('delay_s')} s[/]: {escape(str(d.get('reason')))}")
            case EventKind.DENIED:
                out(f"  [yellow]⛔ denied ({d.get('stage')})[/]: {escape(str(d.get('reason')))}")
            case EventKind.FALLBACK:
                out(f"  [yellow]↪ fallback {d.get('from_tool')} → {d.get('to_tool')}[/]")
            case EventKind.REPLAN:
                out(f"  [yellow]⟲ replanning[/]: {escape(str(d.get('reason')))}")
            case EventKind.ESCALATE:
                to = escape(str(d.get("to_model")))
                out(f"  [yellow]⇧ escalated to {to}[/]: {escape(str(d.get('reason')))}")
            case EventKind.APPROVAL if d.get("state") == "requested":
                out(
                    f"  [yellow]⏸ awaiting approval {d.get('approval_id')}[/]: "
                    f"{escape(str(d.get('reason')))} (bastion approvals approve "
                    f"{d.get('approval_id')})"
                )
            case EventKind.APPROVAL:
                out(f"  [yellow]approval {d.get('state')}[/]: {escape(str(d.get('reason')))}")
            case _:
                pass


def print_response(console: Console, response: AgentResponse) -> None:
    """The answer, the status and the cost."""
    style = _STATUS_STYLE.get(response.status, "bold")
    console.print(f"  [{style}]{response.status.value}[/] · answer:")
    for line in response.message.splitlines() or [""]:
        console.print(f"    {escape(line)}")
    console.print(
        f"  [dim]cost ${usd(response.total_cost_usd)} · {response.input_tokens} in / "
        f"{response.output_tokens} out tokens · model {response.model or '-'} · "
        f"run {response.run_id}[/]"
    )
