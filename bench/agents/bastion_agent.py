"""Bastion under the common workload, built only through its public API (``from_settings``).

Variants (``bastion_agent:VARIANT``), each with every component on (Permissions Gate with its
hash-chained audit log, cost controller with a price for the fake model, breakers on the model and
the tool, checks evaluator, recovery), inline tools:

* ``memory``: durable execution off; the run store (SQLite) on tmpfs (``/dev/shm``): in memory.
* ``disk``: durable execution off; the run store on disk (the baseline of the checkpoint cost).
* ``sqlite``: durable execution on (DBOS, SQLite on disk): the shipped default.
* ``postgres``: durable execution on, store and DBOS in a fresh PostgreSQL database
  (``BENCH_PG_ADMIN_URL``, default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped
  at close.

Bastion plans every step in one model call and words the answer from the tool results (no model
call), so a run makes 1 model call for the others' 11. To keep the model's time equal across
frameworks, the fake's one call waits ``latency * (STEPS + 1)``: the ideal run takes 0.55 s with a
50 ms model everywhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
import uuid
from decimal import Decimal
from importlib import metadata
from pathlib import Path
from typing import Any

from harness import STEPS, TOOL_NAME

from bastion import AgentRequest, AgentSystem, Principal, tool
from bastion.models.interface import ChatModel, ChatRequest, ChatResponse, Usage
from bastion.settings import CostSettings, ModelPrice, Settings, load_settings

MODEL_NAME = "bench:fake"
PG_ADMIN = os.environ.get("BENCH_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
VARIANTS = ("memory", "disk", "sqlite", "postgres")
#: Where the ``memory`` variant keeps its store: RAM-backed when the machine has it.
TMPFS = "/dev/shm" if os.path.isdir("/dev/shm") else None


@tool(name=TOOL_NAME, permissions=("bench:use",))
async def noop(i: int) -> int:
    """Return i (the trivial tool).

    Args:
        i: any integer.
    """
    return i


class FakePlanModel(ChatModel):
    """A `ChatModel` answering every plan call with the same plan of `STEPS` tool calls."""

    def __init__(self, latency_s: float, *, first_call_file: Path | None = None) -> None:
        self.latency_s = latency_s
        self._first_call_file = first_call_file
        steps = [
            {"description": f"step {i}", "tool_name": TOOL_NAME, "tool_args": {"i": i}}
            for i in range(STEPS)
        ]
        self._plan = json.dumps({"reasoning": "bench", "steps": steps})
        self._usage = Usage(input_tokens=400, output_tokens=len(self._plan) // 4)

    @property
    def name(self) -> str:
        return MODEL_NAME

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if self._first_call_file is not None:  # the cold start's end (`suite.cold_start`)
            self._first_call_file.write_text(repr(time.time()))
            self._first_call_file = None
        if self.latency_s:
            await asyncio.sleep(self.latency_s * (STEPS + 1))
        return ChatResponse(text=self._plan, model=MODEL_NAME, usage=self._usage)


def bench_settings(variant: str, data_dir: Path, database_url: str | None = None) -> Settings:
    """Settings for a variant: its storage and durability; limits that fit the workload."""
    if variant not in VARIANTS:
        raise SystemExit(f"unknown Bastion variant {variant!r}; expected one of {VARIANTS}")
    memory: dict[str, Any] = {}
    if variant == "memory":
        memory["database_url"] = f"sqlite:///{data_dir / 'bastion.db'}"
    elif database_url:
        memory["database_url"] = database_url
    price = {"input_per_mtok": "0.15", "output_per_mtok": "0.60"}
    return load_settings(
        data_dir=data_dir,
        memory=memory,
        durable={"enabled": variant in ("sqlite", "postgres"), "worker_concurrency": 10_000},
        cost={"prices": {MODEL_NAME: price}},
        planner={"max_steps": max(STEPS, 10)},
        run={"max_steps": STEPS + 5, "timeout_s": 3600},
    )


def app(settings: Settings) -> AgentSystem:
    """``bastion run --app bastion_agent:app``: the cold start's app (the CLI's own settings).

    Writes the time of the first model call to ``$BENCH_FIRST_CALL_FILE``.
    """
    mark = os.environ.get("BENCH_FIRST_CALL_FILE")
    price = ModelPrice(input_per_mtok=Decimal("0.15"), output_per_mtok=Decimal("0.60"))
    update = {
        "cost": CostSettings(prices={MODEL_NAME: price}),
        "planner": settings.planner.model_copy(update={"max_steps": max(STEPS, 10)}),
        "run": settings.run.model_copy(update={"max_steps": STEPS + 5}),
    }
    settings = settings.model_copy(update=update)
    return build_system(settings, FakePlanModel(0.0, first_call_file=Path(mark) if mark else None))


def build_system(settings: Settings, model: ChatModel) -> AgentSystem:
    """The system under test: every default component, the fake model, the one tool."""
    return AgentSystem.from_settings(
        settings,
        tools=[noop],
        principals=[Principal(id="bench", scopes=frozenset({"bench:use"}))],
        model=model,
    )


class BastionAgent:
    """One `AgentSystem`; each `run` is one request in its own session."""

    model_calls_per_run = 1

    def __init__(self, system: AgentSystem, model: FakePlanModel, cleanup: list[Any]) -> None:
        self.system = system
        self.model = model
        self._cleanup = cleanup
        self.versions = {"bastion": metadata.version("bastion-agents")}
        if system.durable is not None:
            self.versions["dbos"] = metadata.version("dbos")

    async def run(self) -> int:
        request = AgentRequest(user_id="bench", session_id=uuid.uuid4().hex, message="go")
        response = await self.system.run(request)
        if not response.ok:
            raise RuntimeError(f"run did not complete: {response}")
        return response.steps_completed

    def set_latency(self, latency_s: float) -> None:
        self.model.latency_s = latency_s

    async def close(self) -> None:
        await self.system.close()
        for item in self._cleanup:
            if isinstance(item, Path):
                shutil.rmtree(item, ignore_errors=True)
            elif isinstance(item, str):
                _drop_database(item)


def _create_database() -> tuple[str, str]:
    import psycopg

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    base = PG_ADMIN.rsplit("/", 1)[0]
    return name, f"{base}/{name}"


def _drop_database(name: str) -> None:
    import psycopg

    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


async def build(latency_s: float, max_concurrency: int, variant: str = "memory") -> BastionAgent:
    """A started system for `variant` (see the module docstring)."""
    cleanup: list[Any] = []
    database_url = None
    if variant == "postgres":
        name, database_url = _create_database()
        cleanup.append(name)
    root = TMPFS if variant == "memory" else None
    data_dir = Path(tempfile.mkdtemp(prefix="bastion-bench-", dir=root))
    cleanup.append(data_dir)
    model = FakePlanModel(latency_s)
    system = build_system(bench_settings(variant, data_dir, database_url), model)
    await system.start()
    return BastionAgent(system, model, cleanup)
