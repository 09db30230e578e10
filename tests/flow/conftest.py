"""Builders for end-to-end tests of `AgentSystem` with scripted models and real components."""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bastion.gate.interface import ArgPolicy
from bastion.messages import AgentRequest, Principal, RunEvent
from bastion.models.scripted import ScriptedModel
from bastion.router.interface import ToolSpec
from bastion.settings import Settings, load_settings
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock


def plan(*steps: tuple[str, dict[str, Any]], reasoning: str = "because") -> str:
    """A plan in the seed's JSON shape, as a model would write it."""
    return json.dumps(
        {
            "reasoning": reasoning,
            "steps": [
                {"description": f"call {name}", "tool_name": name, "tool_args": args}
                for name, args in steps
            ],
        }
    )


ALICE = Principal(id="alice", roles=frozenset({"customer"}), scopes=frozenset({"basic"}))
ADMIN = Principal(id="admin", roles=frozenset({"admin"}), scopes=frozenset({"*"}))


class Harness:
    """A system under test plus what the test needs to look at."""

    def __init__(self, system: AgentSystem, model: ScriptedModel, clock: FakeClock) -> None:
        self.system = system
        self.model = model
        self.clock = clock
        self.events: list[RunEvent] = []

    async def ask(self, message: str = "help me", *, user: str = "alice", **fields: Any) -> Any:
        request = AgentRequest(
            user_id=user, session_id=fields.pop("session", "s1"), message=message, **fields
        )
        return await self.system.run(request, on_event=self.events.append)

    def kinds(self) -> list[str]:
        return [e.kind.value for e in self.events]


@pytest.fixture(params=["in-process", "durable"])
def make_harness(tmp_path: Path, request: pytest.FixtureRequest) -> Callable[..., Any]:
    """Builds a system under test; every test runs once in process and once on DBOS (SQLite)."""
    durable = {"enabled": request.param == "durable", "polling_interval_s": 0.01}

    @asynccontextmanager
    async def factory(
        responses: Iterable[Any],
        tools: Sequence[ToolSpec],
        *,
        principals: Sequence[Principal] = (ALICE, ADMIN),
        policies: Mapping[str, Sequence[ArgPolicy]] | None = None,
        model_name: str = "scripted:test",
        settings: Mapping[str, Any] | None = None,
    ) -> AsyncIterator[Harness]:
        clock = FakeClock()
        model = ScriptedModel(responses, name=model_name)
        config: Settings = load_settings(data_dir=tmp_path, durable=durable, **(settings or {}))
        system = AgentSystem.from_settings(
            config,
            tools=tools,
            principals=principals,
            policies=policies,
            model=model,
            clock=clock,
            rng=random.Random(7),
        )
        async with system:
            yield Harness(system, model, clock)

    return factory
