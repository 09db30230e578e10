"""The app the kill -9 harness runs: a support-like workload whose tools log every execution.

Each run plans (one model call), then looks an order up (no side effects), refunds it (a side
effect, idempotent by key), emails the customer (a side effect that is NOT idempotent) and looks
the order up again. Every execution of a tool or of the model is logged, with the DBOS workflow and
the journal step it ran as, to a SQLite file the harness reads (``K9_LOG``), so that it can tell a step that
ran again after its checkpoint (a lost completed step) from one that was simply interrupted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import time
from typing import Any

from dbos import DBOS

from bastion import AgentSystem, Principal, ToolContext, tool
from bastion.durable.steps import current_step
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, Usage
from bastion.settings import Settings

SCHEMA = """
create table if not exists executions (
    id integer primary key, workflow_id text, step_id integer, kind text, name text,
    key text, started_ms integer, ended_ms integer
);
create table if not exists refunds (key text primary key, run_id text, amount text);
create table if not exists emails (id integer primary key, key text, run_id text);
"""


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(os.environ["K9_LOG"], timeout=60, isolation_level=None)
    conn.execute("pragma journal_mode=wal")
    conn.execute("pragma synchronous=full")  # the log must survive the kill it observes
    conn.executescript(SCHEMA)
    return conn


def _now_ms() -> int:
    return int(time.time() * 1000)


def _start(kind: str, name: str, key: str) -> int:
    with _db() as conn:
        cur = conn.execute(
            "insert into executions (workflow_id, step_id, kind, name, key, started_ms)"
            " values (?, ?, ?, ?, ?, ?)",
            (DBOS.workflow_id, current_step(), kind, name, key, _now_ms()),
        )
        return int(cur.lastrowid or 0)


def _end(row: int) -> None:
    with _db() as conn:
        conn.execute("update executions set ended_ms = ? where id = ?", (_now_ms(), row))


#: Throughput benchmarks set K9_FAST=1: the tools and the model answer at once.
FAST = os.environ.get("K9_FAST") == "1"


def _pause() -> None:
    if not FAST:
        time.sleep(random.uniform(0.01, 0.06))


@tool(permissions=("orders",))
def lookup(order_id: str, ctx: ToolContext) -> dict[str, str]:
    """Look an order up."""
    row = _start("tool", "lookup", ctx.idempotency_key)
    _pause()
    _end(row)
    return {"order_id": order_id, "status": "shipped"}


@tool(permissions=("orders",), side_effects=True, idempotent=True)
def refund(order_id: str, amount: str, ctx: ToolContext) -> dict[str, str]:
    """Refund an order; a second call with the same key refunds nothing more."""
    row = _start("tool", "refund", ctx.idempotency_key)
    _pause()
    with _db() as conn:
        conn.execute(
            "insert into refunds (key, run_id, amount) values (?, ?, ?) on conflict do nothing",
            (ctx.idempotency_key, ctx.run_id, amount),
        )
    _pause()
    _end(row)
    return {"order_id": order_id, "refunded": amount}


@tool(permissions=("orders",), side_effects=True, idempotent=False)
def email(order_id: str, ctx: ToolContext) -> str:
    """Email the customer (not idempotent: each call sends one more email)."""
    row = _start("tool", "email", ctx.idempotency_key)
    if os.environ.get("K9_DIE") == "before-email":
        os._exit(137)  # the process dies mid-call, before the email went out
    if not FAST:
        time.sleep(random.uniform(0.05, 0.2))  # a slow mail server: kills often land in here
    with _db() as conn:
        conn.execute(
            "insert into emails (key, run_id) values (?, ?)", (ctx.idempotency_key, ctx.run_id)
        )
    if os.environ.get("K9_DIE") == "after-email":
        os._exit(137)  # the process dies mid-call, after the email went out
    _pause()
    _end(row)
    return f"emailed about {order_id}"


PLAN = {
    "reasoning": "look up, refund, tell the customer, check again",
    "steps": [
        {"description": "look up", "tool_name": "lookup", "tool_args": {"order_id": "A1"}},
        {
            "description": "refund",
            "tool_name": "refund",
            "tool_args": {"order_id": "A1", "amount": "5.00"},
        },
        {"description": "email", "tool_name": "email", "tool_args": {"order_id": "A1"}},
        {"description": "check", "tool_name": "lookup", "tool_args": {"order_id": "A1"}},
    ],
}


class HarnessModel(ChatModel):
    """Answers every planning request with `PLAN`, after a short think; logs each call."""

    @property
    def name(self) -> str:
        return "scripted:kill9"

    async def complete(self, request: ChatRequest) -> ChatResponse:
        row = await asyncio.to_thread(_start, "model", self.name, "")
        if not FAST:
            await asyncio.sleep(random.uniform(0.02, 0.08))
        await asyncio.to_thread(_end, row)
        return ChatResponse(
            text=json.dumps(PLAN), model=self.name, usage=Usage(input_tokens=100, output_tokens=60)
        )


def build(settings: Settings) -> AgentSystem:
    return AgentSystem.from_settings(
        settings,
        tools=[lookup, refund, email],
        principals=[Principal(id=f"u{i}", scopes=frozenset({"orders"})) for i in ("", *range(20))],
        model=HarnessModel(),
    )


def counts(log: str) -> dict[str, Any]:
    """Raw tallies from the log (the harness joins them with DBOS's checkpoints)."""
    conn = sqlite3.connect(log)
    try:
        return {
            "executions": conn.execute(
                "select workflow_id, step_id, kind, name, key, started_ms, ended_ms from executions"
            ).fetchall(),
            "refunds": conn.execute(
                "select run_id, count(*) from refunds group by run_id"
            ).fetchall(),
            "emails": conn.execute("select key, count(*) from emails group by key").fetchall(),
        }
    finally:
        conn.close()
