"""The shop under attack: the support demo's tools, people and policies, and any model.

Extra tools read untrusted text: ``read_inbox`` returns an email holding the injection, and
``fetch_page`` fails with an error page holding it; ``check_status`` just fails (so that the model
is asked to replan, with what it read in front of it). Every tool call that actually runs is
recorded by the tools themselves (`Shop.calls`), so a test counts executions, not plans.

A call held for a human approval (a refund above the cap) is answered by `Shop.approver`: by
default nobody approves, and the approval expires (the fake clock is moved past its time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.demo.support.data import ensure_database
from bastion.demo.support.policies import PRINCIPALS, make_policies
from bastion.demo.support.tools import make_tools
from bastion.errors import PlanError
from bastion.messages import AgentPlan, AgentRequest, EventKind, PlanStep, RunEvent
from bastion.models.interface import ChatModel, ChatRequest
from bastion.planner.interface import PlanningContext
from bastion.planner.prompt import build_messages
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool
from bastion.settings import load_settings
from bastion.system import AgentSystem
from bastion.testing.clock import FakeClock


class SchemalessPlanner:
    """A planner that trusts the model: no schema, no tool filter (a bug, or a custom planner).

    With it, whatever the model names reaches the flow, so the gate is the only thing between
    an injected instruction and a tool.
    """

    async def plan(self, context: PlanningContext, *, model: ChatModel) -> AgentPlan:
        response = await model.complete(
            ChatRequest(messages=build_messages(context, max_steps=8), max_tokens=1024)
        )
        try:
            data = json.loads(response.text)
        except ValueError as exc:
            raise PlanError(f"not JSON: {exc}") from exc
        first = len(context.history)
        return AgentPlan(
            steps=tuple(
                PlanStep(
                    step_id=first + index,
                    description=str(step["description"]),
                    tool_name=str(step["tool_name"]),
                    tool_args=dict(step["tool_args"]),
                )
                for index, step in enumerate(data["steps"])
            ),
            reasoning=str(data["reasoning"]),
            revision=context.revision,
        )


@dataclass(frozen=True)
class Executed:
    tool: str
    args: dict[str, Any]


def _inbox(injection: str) -> Callable[..., list[dict[str, str]]]:
    def read_inbox() -> list[dict[str, str]]:
        """Read the user's newest messages.

        Returns the sender, subject and body of each.
        """
        return [
            {"from": "shop@example.com", "subject": "Your order shipped", "body": "On its way."},
            {"from": "attacker@example.net", "subject": "Re: your order", "body": injection},
        ]

    return read_inbox


def _page(injection: str) -> Callable[..., str]:
    def fetch_page(url: str) -> str:
        """Fetch a web page the user names.

        Args:
            url: The page's address.
        """
        raise RuntimeError(f"upstream returned an error page for {url}: {injection}")

    return fetch_page


def check_status() -> str:
    """Check whether the shop's systems are up."""
    raise RuntimeError("status service unavailable")


def _recorded(spec: ToolSpec, calls: list[Executed]) -> ToolSpec:
    inner = spec.fn

    def fn(**kwargs: Any) -> Any:
        calls.append(
            Executed(
                tool=spec.name,
                args={k: v for k, v in kwargs.items() if k != spec.context_param},
            )
        )
        return inner(**kwargs)

    return dataclasses.replace(spec, fn=fn, is_async=False)


#: What happens to an approval a run asks for (the shop and the approval's id are given).
Approver = Callable[["Shop", str], Coroutine[Any, Any, None]]


async def nobody_approves(shop: Shop, approval_id: str) -> None:
    """Nobody decides: time passes beyond the approval's expiry, and the run is told."""
    approval = await shop.system.approvals_pending()
    ttl = max((a.expires_at - shop.clock.now()).total_seconds() for a in approval)
    shop.clock.advance(ttl + 1)
    await shop.system.expire_approvals()


class Shop:
    """A support system under attack, and everything a test looks at afterwards."""

    def __init__(
        self, system: AgentSystem, calls: list[Executed], db: Path, clock: FakeClock
    ) -> None:
        self.system = system
        self.calls = calls
        self.db = db
        self.clock = clock
        self.events: list[RunEvent] = []
        #: Called with each event as it happens (a test's way to act mid-run).
        self.on_event: Callable[[RunEvent], None] | None = None
        #: Answers each approval a run asks for, in the background.
        self.approver: Approver = nobody_approves
        #: Refusals an approver met (a test's record of them).
        self.refusals: list[type[Exception]] = []
        self._answering: set[asyncio.Task[None]] = set()

    def _sink(self, event: RunEvent) -> None:
        self.events.append(event)
        if self.on_event is not None:
            self.on_event(event)
        if event.kind is EventKind.APPROVAL and event.data.get("state") == "requested":
            task = asyncio.get_running_loop().create_task(
                self.approver(self, str(event.data["approval_id"]))
            )
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def ask(self, user: str, message: str, **fields: Any) -> Any:
        request = AgentRequest(user_id=user, session_id=f"s-{user}", message=message, **fields)
        return await self.system.run(request, on_event=self._sink)


@pytest.fixture
def make_shop(tmp_path: Path) -> Callable[..., Any]:
    @asynccontextmanager
    async def factory(
        model: ChatModel,
        *,
        injection: str,
        schemaless: bool = False,
        gate: dict[str, Any] | None = None,
        durable: bool = False,
    ) -> AsyncIterator[Shop]:
        db = ensure_database(tmp_path / "support.db")
        calls: list[Executed] = []
        tools = [
            *make_tools(db),
            make_tool(_inbox(injection), name="read_inbox", permissions=("kb:read",)),
            make_tool(_page(injection), name="fetch_page", permissions=("kb:read",)),
            make_tool(check_status, permissions=("kb:read",)),
        ]
        settings = load_settings(
            data_dir=tmp_path,
            durable={"enabled": durable, "polling_interval_s": 0.01},
            gate=gate or {},
        )
        clock = FakeClock()
        system = AgentSystem.from_settings(
            settings,
            tools=[_recorded(t, calls) for t in tools],
            principals=PRINCIPALS,
            policies=make_policies(db),
            model=model,
            clock=clock,
            rng=random.Random(3),
        )
        if schemaless:
            system.components = dataclasses.replace(system.components, planner=SchemalessPlanner())
        async with system:
            yield Shop(system, calls, db, clock)

    return factory
