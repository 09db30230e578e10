"""Step references and replanning through `AgentSystem`: the values a step receives, the repairs
and replans a bad reference causes, and revisions after successful steps."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from typing_extensions import TypedDict

from bastion.gate.interface import Decision, PolicyInput
from bastion.messages import RunStatus, StepStatus
from bastion.router.registry import tool
from bastion.storage.engine import create_engine
from bastion.storage.tables import run_plans


def ref(path: str) -> dict[str, str]:
    return {"$from": path}


def plan(*steps: tuple[str, dict[str, Any]]) -> str:
    return json.dumps(
        {
            "reasoning": "because",
            "steps": [
                {"description": f"call {name}", "tool_name": name, "tool_args": args}
                for name, args in steps
            ],
        }
    )


class Order(TypedDict):
    order_id: str
    total: int


def make_tools(seen: list[tuple[str, Any]]) -> tuple[Any, Any, Any]:
    @tool(permissions=("basic",))
    def find_order(email: str) -> Order:
        """Find a customer's latest order."""
        seen.append(("find_order", email))
        return {"order_id": f"ord-{email.split('@')[0]}", "total": 42}

    @tool(permissions=("basic",))
    def ship(order_id: str, total: int = 0) -> str:
        """Ship an order."""
        seen.append(("ship", (order_id, total)))
        return f"shipped {order_id}"

    @tool(permissions=("basic",))
    def raw_lookup(email: str) -> dict[str, Any]:
        """An order lookup whose result is not described field by field."""
        seen.append(("raw_lookup", email))
        return {"id": "ord-raw"}

    return find_order, ship, raw_lookup


async def test_a_step_receives_the_earlier_steps_result(make_harness):
    seen: list[tuple[str, Any]] = []
    tools = make_tools(seen)
    responses = [
        plan(
            ("find_order", {"email": "ann@example.com"}),
            (
                "ship",
                {
                    "order_id": ref("steps[0].result.order_id"),
                    "total": ref("steps[0].result.total"),
                },
            ),
        )
    ]
    async with make_harness(responses, tools) as h:
        response = await h.ask("ship my order")
        h.model.assert_consumed()
    assert response.status is RunStatus.COMPLETED
    assert seen == [("find_order", "ann@example.com"), ("ship", ("ord-ann", 42))]
    assert response.plan is not None
    # The step as kept in the run carries the resolved values, not the reference.
    assert response.plan.steps[1].tool_args == {"order_id": "ord-ann", "total": 42}


async def test_the_gate_authorizes_the_resolved_value_at_execution(make_harness):
    seen: list[tuple[str, Any]] = []
    tools = make_tools(seen)
    checked: list[tuple[str, Any]] = []

    async def no_ann(call: PolicyInput) -> Decision | None:
        checked.append((call.stage, call.args.get("order_id")))
        if call.args.get("order_id") == "ord-ann":
            return Decision.deny("ord-ann is frozen")
        return None

    responses = [
        plan(
            ("find_order", {"email": "ann@example.com"}),
            ("ship", {"order_id": ref("steps[0].result.order_id")}),
        ),
        plan(),  # the replan after the denial: nothing else to do
    ]
    async with make_harness(responses, tools, policies={"ship": [no_ann]}) as h:
        response = await h.ask("ship my order")
        h.model.assert_consumed()
    # At plan time the value is unknown (the policy sees no order id); at the call, the real one.
    assert checked == [("plan", None), ("execute", "ord-ann")]
    assert ("ship", ("ord-ann", 0)) not in seen
    assert response.plan is not None
    assert [s.status for s in response.plan.steps] == [StepStatus.SUCCESS, StepStatus.DENIED]


async def test_a_reference_the_return_schema_rules_out_is_repaired_by_the_planner(make_harness):
    seen: list[tuple[str, Any]] = []
    tools = make_tools(seen)
    responses = [
        plan(
            ("find_order", {"email": "ann@example.com"}),
            ("ship", {"order_id": ref("steps[0].result.id")}),
        ),
        plan(
            ("find_order", {"email": "ann@example.com"}),
            ("ship", {"order_id": ref("steps[0].result.order_id")}),
        ),
    ]
    async with make_harness(responses, tools) as h:
        response = await h.ask("ship my order")
        repair = h.model.calls[1].messages[-1].content
        h.model.assert_consumed()
    assert "steps[1].tool_args.order_id" in repair
    assert "has no field 'id'" in repair
    assert "order_id, total" in repair  # the fields it does have
    assert response.status is RunStatus.COMPLETED
    assert seen[-1] == ("ship", ("ord-ann", 0))


async def test_a_reference_that_fails_at_the_call_is_replanned(make_harness):
    seen: list[tuple[str, Any]] = []
    tools = make_tools(seen)
    responses = [
        plan(
            ("raw_lookup", {"email": "bo@example.com"}),
            ("ship", {"order_id": ref("steps[0].result.order_id")}),
        ),
        # The replan: step 0 (in the history) returned {"id": ...}; the new step is numbered 2.
        plan(("ship", {"order_id": ref("steps[0].result.id")})),
    ]
    async with make_harness(responses, tools) as h:
        response = await h.ask("ship my order")
        replan_prompt = h.model.calls[1].messages[-1].content
        h.model.assert_consumed()
    assert "has no field 'order_id'" in replan_prompt
    assert "its fields: id" in replan_prompt
    assert response.status is RunStatus.COMPLETED
    assert seen == [("raw_lookup", "bo@example.com"), ("ship", ("ord-raw", 0))]
    assert response.plan is not None
    assert [s.step_id for s in response.plan.steps][-1] == 2
    assert h.kinds().count("replan") == 1


async def test_a_bad_reference_from_a_custom_planner_is_refused_at_vetting(make_harness):
    import dataclasses

    from bastion.messages import AgentPlan, PlanStep

    seen: list[tuple[str, Any]] = []
    tools = make_tools(seen)

    class ForwardPlanner:
        def __init__(self) -> None:
            self.feedback: list[str | None] = []

        async def plan(self, context, *, model):
            self.feedback.append(context.feedback)
            if context.feedback is not None:
                return AgentPlan(steps=(), reasoning="give up", revision=context.revision)
            return AgentPlan(
                steps=(
                    PlanStep(
                        step_id=0,
                        description="ship first",
                        tool_name="ship",
                        tool_args={"order_id": ref("steps[1].result.order_id")},
                    ),
                    PlanStep(
                        step_id=1,
                        description="then find",
                        tool_name="find_order",
                        tool_args={"email": "ann@example.com"},
                    ),
                ),
                reasoning="backwards",
            )

    async with make_harness([], tools) as h:
        planner = ForwardPlanner()
        h.system.components = dataclasses.replace(h.system.components, planner=planner)
        response = await h.ask()
    assert seen == []
    assert planner.feedback[0] is None
    assert "not an earlier step" in (planner.feedback[1] or "")
    assert response.plan is not None
    assert response.plan.steps[0].status is StepStatus.FAILED


async def test_revising_after_each_step_is_bounded_and_every_revision_is_kept(
    make_harness, tmp_path
):
    seen: list[tuple[str, Any]] = []
    tools = make_tools(seen)
    responses = [
        plan(("find_order", {"email": "ann@example.com"}), ("ship", {"order_id": "wrong"})),
        # Revision 1, after step 0: the model now uses step 0's result.
        plan(
            ("ship", {"order_id": ref("steps[0].result.order_id")}),
            ("find_order", {"email": "cy@example.com"}),
        ),
        # No revision 2: the bound (max_revisions=1) is reached.
    ]
    settings = {"planner": {"replan_after_each_step": True, "max_revisions": 1}}
    async with make_harness(responses, tools, settings=settings) as h:
        response = await h.ask("ship my order")
        revision_prompt = h.model.calls[1].messages[-1].content
        h.model.assert_consumed()
    assert response.status is RunStatus.COMPLETED
    assert seen == [
        ("find_order", "ann@example.com"),
        ("ship", ("ord-ann", 0)),
        ("find_order", "cy@example.com"),
    ]
    assert "step 0 (find_order) succeeded" in revision_prompt
    assert "ord-ann" in revision_prompt  # the result so far is shown
    replans = [e for e in h.events if e.kind.value == "replan"]
    assert [(e.data["revision"], e.data.get("after")) for e in replans] == [(1, "success")]
    assert [e.data["revision"] for e in h.events if e.kind.value == "plan"] == [0, 1]
    engine = create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}")
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(run_plans.c.revision)
                .where(run_plans.c.run_id == response.run_id)
                .order_by(run_plans.c.revision)
            )
            assert [r.revision for r in rows] == [0, 1]
    finally:
        await engine.dispose()


async def test_revisions_do_not_use_up_the_replans_kept_for_failures(make_harness):
    seen: list[tuple[str, Any]] = []
    find_order, ship, _ = make_tools(seen)

    @tool(permissions=("basic",))
    def flaky() -> str:
        """Fails."""
        raise RuntimeError("nope")

    responses = [
        plan(("find_order", {"email": "ann@example.com"}), ("flaky", {})),
        plan(("flaky", {})),  # revision after step 0
        plan(("ship", {"order_id": ref("steps[0].result.order_id")})),  # replan after failure
    ]
    settings = {
        "planner": {"replan_after_each_step": True, "max_revisions": 1},
        "recovery": {"max_replans": 1},
    }
    async with make_harness(responses, [find_order, ship, flaky], settings=settings) as h:
        response = await h.ask("ship my order")
        h.model.assert_consumed()
    assert response.status is RunStatus.COMPLETED
    assert seen[-1] == ("ship", ("ord-ann", 0))
    assert [e.data["revision"] for e in h.events if e.kind.value == "plan"] == [0, 1, 2]
