"""End to end through `AgentSystem`: every failure path ends in a defined terminal status."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import pytest

from bastion.errors import ModelRateLimited, ModelUnavailable, TransientToolError
from bastion.gate.interface import Decision, PolicyInput
from bastion.messages import RunStatus, StepStatus
from bastion.router.interface import ToolContext
from bastion.router.registry import tool


def plan(*steps: tuple[str, dict[str, Any]], reasoning: str = "because") -> str:
    return json.dumps(
        {
            "reasoning": reasoning,
            "steps": [
                {"description": f"call {name}", "tool_name": name, "tool_args": args}
                for name, args in steps
            ],
        }
    )


@tool(permissions=("basic",))
async def get_order(order_id: str) -> dict[str, str]:
    """Look up an order.

    Args:
        order_id: The order's id.
    """
    return {"order_id": order_id, "status": "shipped"}


@tool(permissions=("basic",))
def boom() -> str:
    """A tool that always fails."""
    raise RuntimeError("database on fire")


@tool(permissions=("basic",), timeout_s=0.05)
async def hang() -> str:
    """A tool that never answers."""
    await asyncio.Event().wait()
    return "never"


@tool(permissions=("refunds:write",), side_effects=True, idempotent=True)
def refund(order_id: str) -> str:
    """Refund an order."""
    return f"refunded {order_id}"


async def test_happy_path_runs_the_plan_and_persists_the_run(make_harness):
    async with make_harness([plan(("get_order", {"order_id": "A1"}))], [get_order]) as h:
        response = await h.ask("Where is A1?")
        h.model.assert_consumed()

    assert response.status is RunStatus.COMPLETED
    assert response.steps_completed == 1
    assert response.steps_failed == 0
    assert response.plan is not None
    step = response.plan.steps[0]
    assert step.status is StepStatus.SUCCESS
    assert step.result == {"order_id": "A1", "status": "shipped"}
    assert "shipped" in response.message
    assert h.kinds()[:3] == ["status", "status", "model_call"]
    assert h.kinds()[-2:] == ["answer", "status"]
    assert [e.seq for e in h.events] == list(range(1, len(h.events) + 1))


async def test_run_is_readable_from_the_store_after_it_ends(make_harness):
    async with make_harness([plan(("get_order", {"order_id": "A1"}))], [get_order]) as h:
        response = await h.ask("Where is A1?")
        record = await h.system.components.memory.get_run(response.run_id)
    assert record is not None
    assert record.status is RunStatus.COMPLETED
    assert record.answer == response.message
    assert [s.status for s in record.steps] == [StepStatus.SUCCESS]
    assert [e.seq for e in record.events] == [e.seq for e in h.events]


async def test_a_tool_that_raises_is_replanned_then_aborted(make_harness):
    responses = [plan(("boom", {}))] * 3
    async with make_harness(responses, [boom, get_order]) as h:
        response = await h.ask()
        h.model.assert_consumed()
    assert response.status is RunStatus.FAILED
    assert "database on fire" not in response.message  # internals stay with the operator
    assert response.error
    assert "database on fire" in response.error
    assert response.steps_failed == 3
    assert h.kinds().count("replan") == 2


async def test_replanning_shows_the_model_what_happened(make_harness):
    responses = [plan(("get_order", {"order_id": "A7"}), ("boom", {})), plan()]
    async with make_harness(responses, [boom, get_order]) as h:
        response = await h.ask()
        second_prompt = "\n".join(m.content for m in h.model.calls[1].messages)
    assert response.status is RunStatus.COMPLETED
    assert "A7" in second_prompt
    assert "shipped" in second_prompt
    assert "database on fire" in second_prompt  # and why the replan was asked for


async def test_a_tool_that_hangs_times_out_retries_then_fails(make_harness):
    settings = {"recovery": {"max_replans": 0, "max_attempts": 3}}
    async with make_harness([plan(("hang", {}))], [hang], settings=settings) as h:
        response = await h.ask()
    assert response.status is RunStatus.FAILED
    assert response.plan is not None
    assert response.plan.steps[0].status is StepStatus.FAILED
    assert "timed out" in (response.plan.steps[0].error or "")
    assert h.kinds().count("retry") == 2
    assert len(h.clock.sleeps) == 2
    assert all(0 <= s <= 8.0 for s in h.clock.sleeps)


async def test_transient_tool_error_is_retried_and_succeeds(make_harness):
    calls = []

    @tool(permissions=("basic",))
    def flaky() -> str:
        """Fails once."""
        calls.append(1)
        if len(calls) == 1:
            raise TransientToolError("upstream 503")
        return "fine"

    async with make_harness([plan(("flaky", {}))], [flaky]) as h:
        response = await h.ask()
    assert response.status is RunStatus.COMPLETED
    assert len(calls) == 2


async def test_invalid_json_is_repaired_then_fails_clearly(make_harness):
    responses = ["not json", "{still not", "```nope```"]
    async with make_harness(responses, [get_order]) as h:
        response = await h.ask()
        h.model.assert_consumed()
    assert response.status is RunStatus.FAILED
    assert "could not work out" in response.message
    assert response.error


async def test_invalid_json_repaired_on_second_try_completes(make_harness):
    responses = ["not json", plan(("get_order", {"order_id": "A1"}))]
    async with make_harness(responses, [get_order]) as h:
        response = await h.ask()
        repair_prompt = h.model.calls[1].messages[-1].content
    assert response.status is RunStatus.COMPLETED
    assert "JSON" in repair_prompt


@pytest.mark.parametrize(
    ("bad_plan", "problem"),
    [
        (plan(("delete_everything", {})), "delete_everything"),
        (plan(("get_order", {"order": "A1"})), "order"),
        (plan(("get_order", {})), "order_id"),
    ],
    ids=["unknown-tool", "extra-arg", "missing-arg"],
)
async def test_plans_failing_the_schema_end_in_failed(make_harness, bad_plan, problem):
    async with make_harness([bad_plan] * 3, [get_order]) as h:
        response = await h.ask()
        h.model.assert_consumed()
    assert response.status is RunStatus.FAILED
    assert response.error is not None
    assert problem in response.error


async def test_a_tool_needing_a_scope_the_user_lacks_is_never_offered_nor_run(make_harness):
    ran = []

    @tool(permissions=("refunds:write",), side_effects=True, idempotent=True)
    def refund_it(order_id: str) -> str:
        """Refund."""
        ran.append(order_id)
        return "ok"

    async with make_harness([plan(("refund_it", {"order_id": "A1"}))] * 3, [refund_it]) as h:
        response = await h.ask()
        schema = h.model.calls[0].json_schema
    assert ran == []
    assert response.status is RunStatus.FAILED
    assert "refund_it" not in json.dumps(schema)


async def test_a_custom_planner_cannot_smuggle_a_forbidden_tool_past_the_gate(make_harness):
    ran = []

    @tool(permissions=("refunds:write",), side_effects=True, idempotent=True)
    def refund_it(order_id: str) -> str:
        """Refund."""
        ran.append(order_id)
        return "ok"

    async with make_harness([], [refund_it, get_order]) as h:
        from bastion.messages import AgentPlan, PlanStep

        class RoguePlanner:
            async def plan(self, context, *, model):
                return AgentPlan(
                    steps=(
                        PlanStep(
                            step_id=0,
                            description="refund",
                            tool_name="refund_it",
                            tool_args={"order_id": "A1"},
                        ),
                    ),
                    reasoning="rogue",
                )

        import dataclasses

        h.system.components = dataclasses.replace(h.system.components, planner=RoguePlanner())
        response = await h.ask()
    assert ran == []
    assert response.status is RunStatus.ABORTED
    assert response.plan is not None
    assert response.plan.steps[0].status is StepStatus.DENIED
    assert "refunds:write" in (response.plan.steps[0].error or "")


async def test_another_customers_order_is_denied_by_policy(make_harness):
    looked_up = []

    @tool(permissions=("basic",))
    def lookup(order_id: str) -> str:
        """Look up."""
        looked_up.append(order_id)
        return order_id

    async def own_orders(call: PolicyInput) -> Decision | None:
        if call.args.get("order_id") != "A1":
            return Decision.deny(f"{call.principal.id} may not access {call.args['order_id']}")
        return None

    async with make_harness(
        [plan(("lookup", {"order_id": "B9"}))] * 3, [lookup], policies={"lookup": [own_orders]}
    ) as h:
        response = await h.ask()
    assert looked_up == []
    assert response.status is RunStatus.ABORTED
    assert response.plan is not None
    assert response.plan.steps[-1].status is StepStatus.DENIED
    assert "not allowed" in response.message.lower()
    assert h.kinds().count("denied") == 3


async def test_budget_too_small_for_the_next_call_never_calls_the_model(make_harness):
    async with make_harness(
        [plan(("get_order", {"order_id": "A1"}))], [get_order], model_name="openai:gpt-4o"
    ) as h:
        response = await h.ask(max_budget_usd=Decimal("0.0001"))
        calls = len(h.model.calls)
    assert calls == 0
    assert response.status is RunStatus.ABORTED
    assert "budget" in response.message
    assert response.total_cost_usd == 0


async def test_priced_model_cost_is_reported(make_harness):
    async with make_harness(
        [plan(("get_order", {"order_id": "A1"}))], [get_order], model_name="openai:gpt-4o"
    ) as h:
        response = await h.ask(max_budget_usd=Decimal("1"))
    assert response.status is RunStatus.COMPLETED
    assert Decimal(0) < response.total_cost_usd < Decimal("0.05")


async def test_open_model_circuit_fails_fast_with_a_message(make_harness):
    async with make_harness([], [get_order]) as h:
        assert h.system.breakers is not None
        breaker = h.system.breakers.get("model:scripted:test")
        for _ in range(breaker.config.minimum_calls):
            breaker.record_failure()
        response = await h.ask()
    assert response.status is RunStatus.ABORTED
    assert "failing right now" in response.message


async def test_open_tool_circuit_stops_calls_to_the_tool(make_harness):
    responses = [plan(("get_order", {"order_id": "A1"}))] * 3
    async with make_harness(responses, [get_order]) as h:
        assert h.system.breakers is not None
        breaker = h.system.breakers.get("tool:get_order")
        for _ in range(breaker.config.minimum_calls):
            breaker.record_failure()
        response = await h.ask()
    assert response.status is RunStatus.ABORTED
    assert response.plan is not None
    assert "circuit" in (response.plan.steps[0].error or "").lower()


async def test_rate_limited_model_is_retried_after_retry_after(make_harness):
    responses = [
        ModelRateLimited("slow down", retry_after_s=2.0),
        plan(("get_order", {"order_id": "A1"})),
    ]
    async with make_harness(responses, [get_order]) as h:
        response = await h.ask()
    assert response.status is RunStatus.COMPLETED
    assert h.clock.sleeps
    assert h.clock.sleeps[0] >= 2.0


async def test_model_down_for_good_fails_with_a_clear_message(make_harness):
    responses = [ModelUnavailable("503")] * 3
    async with make_harness(responses, [get_order]) as h:
        response = await h.ask()
        h.model.assert_consumed()
    assert response.status is RunStatus.FAILED
    assert "could not be reached" in response.message


async def test_unknown_user_is_refused_at_the_door(make_harness):
    async with make_harness([], [get_order]) as h:
        response = await h.ask(user="mallory")
    assert response.status is RunStatus.ABORTED
    assert "identified" in response.message


async def test_unexpected_component_error_ends_the_run_failed(make_harness):
    class BrokenEvaluator:
        async def evaluate(self, step, spec, outcome):
            raise RuntimeError("bug in evaluator")

    async with make_harness([plan(("get_order", {"order_id": "A1"}))], [get_order]) as h:
        import dataclasses

        h.system.components = dataclasses.replace(h.system.components, evaluator=BrokenEvaluator())
        response = await h.ask()
        record = await h.system.components.memory.get_run(response.run_id)
    assert response.status is RunStatus.FAILED
    assert "went wrong" in response.message
    assert record is not None
    assert record.status is RunStatus.FAILED


async def test_cancelling_a_run_checkpoints_it_as_cancelled(make_harness):
    started = asyncio.Event()

    @tool(permissions=("basic",), timeout_s=60)
    async def slow() -> str:
        """Waits."""
        started.set()
        await asyncio.Event().wait()
        return "never"

    async with make_harness([plan(("slow", {}))], [slow]) as h:
        task = asyncio.create_task(h.ask())
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        runs = await h.system.components.memory.list_runs(user_id="alice")
    assert [r.status for r in runs] == [RunStatus.CANCELLED]


async def test_run_deadline_stops_a_long_run(make_harness):
    @tool(permissions=("basic",), timeout_s=60)
    async def slow() -> str:
        """Waits."""
        await asyncio.Event().wait()
        return "never"

    async with make_harness([plan(("slow", {}))], [slow]) as h:
        response = await h.ask(timeout_s=0.05)
    assert response.status in (RunStatus.FAILED, RunStatus.ABORTED)
    assert "too long" in response.message or "timed out" in (response.error or "")


async def test_empty_plan_completes_with_a_helpful_answer(make_harness):
    async with make_harness([plan()], [get_order]) as h:
        response = await h.ask("hello")
    assert response.status is RunStatus.COMPLETED
    assert response.message


async def test_tool_receives_the_idempotency_key(make_harness):
    seen: list[str] = []

    @tool(permissions=("basic",), side_effects=True, idempotent=True)
    def keyed(ctx: ToolContext) -> str:
        """Records its key."""
        seen.append(ctx.idempotency_key)
        return "ok"

    async with make_harness([plan(("keyed", {}))], [keyed]) as h:
        response = await h.ask()
    assert seen == [f"{response.run_id}:0"]


async def test_session_history_reaches_the_planner(make_harness):
    responses = [plan(("get_order", {"order_id": "A1"})), plan()]
    async with make_harness(responses, [get_order]) as h:
        await h.ask("first question about A1", session="s9")
        await h.ask("and again?", session="s9")
        second = "\n".join(m.content for m in h.model.calls[1].messages)
    assert "first question about A1" in second


async def test_per_step_fallback_tool_is_used(make_harness):
    @tool(permissions=("basic",))
    def backup(order_id: str) -> str:
        """Backup lookup."""
        return f"backup {order_id}"

    @tool(permissions=("basic",), fallback="backup")
    def primary(order_id: str) -> str:
        """Primary lookup."""
        raise RuntimeError("primary down")

    async with make_harness([plan(("primary", {"order_id": "A1"}))], [primary, backup]) as h:
        response = await h.ask()
    assert response.status is RunStatus.COMPLETED
    assert response.plan is not None
    assert response.plan.steps[0].tool_name == "backup"
    assert "fallback" in h.kinds()


async def test_the_event_loop_still_runs_threads_after_a_system_stops(make_harness):
    """DBOS replaces the loop's default executor and shuts it down when it stops; a system that
    stopped must leave the loop able to run `asyncio.to_thread` (a server's next system, a test's
    next fixture)."""
    async with make_harness([plan(("get_order", {"order_id": "A1"}))], [get_order]) as h:
        response = await h.ask("Where is A1?")
        assert response.status is RunStatus.COMPLETED
    assert await asyncio.to_thread(lambda: 42) == 42
