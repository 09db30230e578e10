"""script.json against the tools, the principals and DEMO_REQUESTS (requests.py)."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from bastion.demo.support.app import SCRIPT_PATH, SYSTEM_PROMPT
from bastion.demo.support.policies import PRINCIPALS, make_policies
from bastion.demo.support.requests import DEMO_REQUESTS, DemoRequest
from bastion.demo.support.tools import make_tools
from bastion.gate.interface import PolicyInput
from bastion.memory import MemoryTools, SqlMemory
from bastion.memory.facts import Fact
from bastion.memory.interface import MemoryContext
from bastion.messages import (
    AgentRequest,
    PlanStep,
    Principal,
    StepRecord,
    StepStatus,
    ToolErrorKind,
    ToolOutcome,
)
from bastion.models.interface import ChatRequest
from bastion.models.scripted import ScriptedModel
from bastion.planner.interface import PlanningContext
from bastion.planner.plan_schema import build_plan_schema
from bastion.planner.prompt import build_messages, user_text
from bastion.router.interface import ToolContext, ToolSpec
from bastion.testing.clock import FakeClock

BY_ID = {principal.id: principal for principal in PRINCIPALS}

#: What each demo request is for: the tools its plan calls, and which step the gate denies.
EXPECTED: dict[str, tuple[list[str], int | None]] = {
    "Where is my order A1001?": (["lookup_order", "track_shipment"], None),
    "How do I reset my password?": (["search_kb"], None),
    "My parcel arrived damaged, I want to talk to a human": (
        ["search_kb", "escalate_to_human"],
        None,
    ),
    "Refund 20.00 on order A1003, the customer was charged twice for shipping": (
        ["issue_refund"],
        None,
    ),
    "Show me the details of order A1003": (["lookup_order"], 0),
    "Please refund my order A1002": (["lookup_order", "escalate_to_human"], None),
    "Refund 250.00 on order A1007, the espresso machine arrived broken": (["issue_refund"], 0),
    "Can I still cancel my order A1005?": (["search_kb", "lookup_order"], None),
    "Order A1003 was paid 112.05 after a 10% voucher and the customer returns the coffee scale: "
    "work out the refund pro rata": (["prorata_refund"], None),
    "Please contact me by email from now on, not by phone": (["remember"], None),
    "My coffee grinder stopped working, I need a person": (["escalate_to_human"], None),
}

#: Long-term facts the planner sees for a request, by session: what earlier sessions remembered.
REMEMBERED = "Prefers to be contacted by email, not by phone"
KNOWN_FACTS: dict[str, tuple[str, ...]] = {"demo-c4-grinder": (REMEMBERED,)}


#: Rules ahead of the requests' own: they answer the replan that follows a denial.
REPLAN_RULES = 2
#: For the requests the gate denies: the tools of the plan made after the denial.
AFTER_DENIAL: dict[str, list[str]] = {
    "Show me the details of order A1003": [],
    "Refund 250.00 on order A1007, the espresso machine arrived broken": ["escalate_to_human"],
}


def load_script() -> dict[str, Any]:
    script: dict[str, Any] = json.loads(SCRIPT_PATH.read_text(encoding="utf-8"))
    return script


def first_rule(message: str) -> dict[str, Any]:
    # As the scripted model matches: case-insensitive search in the last user message.
    return next(r for r in load_script()["rules"] if re.search(r["when"], message, re.I))


def memory_for(request_: DemoRequest) -> MemoryContext:
    """What the memory gives the planner for a demo request: the facts earlier sessions kept."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    facts = tuple(
        Fact(fact_id=n, user_id=request_.user_id, content=text, source="tool", created_at=at)
        for n, text in enumerate(KNOWN_FACTS.get(request_.session_id, ()))
    )
    return MemoryContext(facts=facts)


def prompt_for(request_: DemoRequest) -> str:
    """The planner's user message for a demo request, with the facts its user has by then."""
    context = PlanningContext(
        request=AgentRequest(
            user_id=request_.user_id, session_id=request_.session_id, message=request_.message
        ),
        tools=(),
        memory=memory_for(request_),
    )
    return user_text(context)


def rule_for(request_: DemoRequest) -> dict[str, Any]:
    return first_rule(prompt_for(request_))


@pytest.fixture
async def tools(db: Path, clock: FakeClock, tmp_path: Path) -> AsyncIterator[dict[str, ToolSpec]]:
    """The demo's tools as `build` registers them: the shop's and ``remember``."""
    memory = SqlMemory.from_url(f"sqlite+aiosqlite:///{tmp_path / 'memory.db'}", clock=clock)
    await memory.start()
    memory_tools = MemoryTools()
    memory_tools.bind(memory)
    try:
        yield {spec.name: spec for spec in [*make_tools(db, clock=clock), *memory_tools.tools()]}
    finally:
        await memory.close()


def visible(tools: dict[str, ToolSpec], principal: Principal) -> list[ToolSpec]:
    return [spec for spec in tools.values() if spec.required_permissions <= principal.scopes]


def test_script_is_shipped_in_the_package_and_is_well_formed() -> None:
    assert SCRIPT_PATH.name == "script.json"
    assert SCRIPT_PATH.is_file()
    script = load_script()
    assert script["mode"] == "match"
    rules = script["rules"]
    for rule in rules:
        re.compile(rule["when"])
        assert set(rule) == {"when", "reply"}
        assert set(rule["reply"]) == {"reasoning", "steps"}
    assert rules[-1] == {"when": ".", "reply": rules[-1]["reply"]}
    assert rules[-1]["reply"]["steps"] == []


def test_there_is_one_rule_per_demo_request_and_a_catch_all() -> None:
    rules = load_script()["rules"]
    assert len(rules) == REPLAN_RULES + len(DEMO_REQUESTS) + 1
    chosen = [rules.index(rule_for(request)) for request in DEMO_REQUESTS]
    assert sorted(chosen) == list(range(REPLAN_RULES, REPLAN_RULES + len(DEMO_REQUESTS)))


def test_requests_cover_the_demo_paths() -> None:
    assert 6 <= len(DEMO_REQUESTS) <= 12
    assert {request.message for request in DEMO_REQUESTS} == set(EXPECTED)
    assert all(request.user_id in BY_ID for request in DEMO_REQUESTS)
    # One session each: an earlier request's turns never steer a later one's plan.
    assert len({request.session_id for request in DEMO_REQUESTS}) == len(DEMO_REQUESTS)
    user_id, session_id, message = DEMO_REQUESTS[0]
    assert (user_id, session_id, message) == (
        "c1",
        DEMO_REQUESTS[0].session_id,
        "Where is my order A1001?",
    )


@pytest.mark.parametrize("message", ["hello", "What is the meaning of life?", "A1001"])
def test_anything_else_gets_the_empty_plan(message: str) -> None:
    assert first_rule(message)["reply"]["steps"] == []


@pytest.mark.parametrize("request_", DEMO_REQUESTS, ids=lambda r: r.session_id)
def test_each_plan_is_valid_for_the_tools_its_caller_may_see(
    tools: dict[str, ToolSpec], request_: DemoRequest
) -> None:
    reply = rule_for(request_)["reply"]
    principal = BY_ID[request_.user_id]
    schema = build_plan_schema(visible(tools, principal), max_steps=8)
    Draft202012Validator(schema).validate(reply)
    for step in reply["steps"]:
        spec = tools[step["tool_name"]]
        Draft202012Validator(dict(spec.args_schema)).validate(step["tool_args"])
        spec.validate_args(step["tool_args"])
    assert [step["tool_name"] for step in reply["steps"]] == EXPECTED[request_.message][0]


def test_customers_are_never_offered_the_refund_tool(tools: dict[str, ToolSpec]) -> None:
    for principal in PRINCIPALS:
        names = {spec.name for spec in visible(tools, principal)}
        assert ("issue_refund" in names) == (principal.id == "lead")


@pytest.mark.parametrize("request_", DEMO_REQUESTS, ids=lambda r: r.session_id)
async def test_each_plan_does_what_the_demo_shows(
    db: Path,
    tools: dict[str, ToolSpec],
    request_: DemoRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Run each plan's steps through the policies and the tools, as the runtime would."""
    monkeypatch.chdir(tmp_path)  # run_python's workspace is its working directory
    principal = BY_ID[request_.user_id]
    policies = make_policies(db)
    denied_at = None
    for index, step in enumerate(rule_for(request_)["reply"]["steps"]):
        spec = tools[step["tool_name"]]
        policy_input = PolicyInput(
            principal=principal, tool=spec, args=step["tool_args"], stage="execute", run_id="r"
        )
        decisions = [await policy(policy_input) for policy in policies.get(spec.name, [])]
        if any(d is not None and not d.allowed for d in decisions):
            denied_at = index
            break
        kwargs = spec.validate_args(step["tool_args"])
        if spec.context_param:
            kwargs[spec.context_param] = ToolContext(
                run_id="r",
                step_id=index,
                attempt=1,
                principal=principal,
                idempotency_key=f"r:{index}",
            )
        value = spec.fn(**kwargs)
        if inspect.isawaitable(value):
            value = await value
        spec.return_adapter.validate_python(value)  # type: ignore[union-attr]
    assert denied_at == EXPECTED[request_.message][1]


@pytest.mark.parametrize("request_", DEMO_REQUESTS, ids=lambda r: r.session_id)
async def test_the_scripted_model_answers_the_planners_prompt_with_the_plan(
    tools: dict[str, ToolSpec], request_: DemoRequest
) -> None:
    """The file loads as a ScriptedModel, and the planner's real prompt picks the right rule."""
    model = ScriptedModel.from_file(SCRIPT_PATH)
    context = PlanningContext(
        request=AgentRequest(
            user_id=request_.user_id, session_id=request_.session_id, message=request_.message
        ),
        tools=tuple(visible(tools, BY_ID[request_.user_id])),
        memory=memory_for(request_),
    )
    messages = build_messages(context, max_steps=8, system_prompt=SYSTEM_PROMPT)
    response = await model.complete(ChatRequest(messages=messages))
    assert json.loads(response.text) == rule_for(request_)["reply"]


async def replan_prompt(
    db: Path, tools: dict[str, ToolSpec], request_: DemoRequest
) -> tuple[ChatRequest, list[ToolSpec]]:
    """The planner's prompt after the gate denied the first step of the request's plan."""
    principal = BY_ID[request_.user_id]
    step = rule_for(request_)["reply"]["steps"][0]
    spec = tools[step["tool_name"]]
    policy_input = PolicyInput(
        principal=principal, tool=spec, args=step["tool_args"], stage="plan", run_id="r"
    )
    denials = [await policy(policy_input) for policy in make_policies(db)[spec.name]]
    reason = next(d.reason for d in denials if d is not None)
    record = StepRecord(
        step=PlanStep(
            step_id=1,
            description=step["description"],
            tool_name=spec.name,
            tool_args=step["tool_args"],
        ),
        status=StepStatus.DENIED,
        outcome=ToolOutcome.failure(ToolErrorKind.DENIED, reason),
    )
    allowed = visible(tools, principal)
    context = PlanningContext(
        request=AgentRequest(
            user_id=request_.user_id, session_id=request_.session_id, message=request_.message
        ),
        tools=tuple(allowed),
        memory=MemoryContext(),
        history=(record,),
        feedback=reason,
        revision=1,
    )
    messages = build_messages(context, max_steps=8, system_prompt=SYSTEM_PROMPT)
    return ChatRequest(messages=messages), allowed


@pytest.mark.parametrize("message", sorted(AFTER_DENIAL))
async def test_after_a_denial_the_replan_stops_or_asks_a_person(
    db: Path, tools: dict[str, ToolSpec], message: str
) -> None:
    (request_,) = [r for r in DEMO_REQUESTS if r.message == message]
    prompt, allowed = await replan_prompt(db, tools, request_)
    response = await ScriptedModel.from_file(SCRIPT_PATH).complete(prompt)
    plan = json.loads(response.text)
    Draft202012Validator(build_plan_schema(allowed, max_steps=8)).validate(plan)
    assert [step["tool_name"] for step in plan["steps"]] == AFTER_DENIAL[message]


def test_replan_rules_never_answer_a_first_plan() -> None:
    rules = load_script()["rules"][:REPLAN_RULES]
    for request_ in DEMO_REQUESTS:
        assert not any(re.search(rule["when"], request_.message, re.I) for rule in rules)


def test_the_fact_remembered_in_session_one_is_what_session_two_plans_with() -> None:
    """The demo's two sessions chain: session 1's remember step stores exactly the fact that
    session 2's plan needs, and without it session 2 gets no plan (the memory is what helps)."""
    [first] = [r for r in DEMO_REQUESTS if r.session_id == "demo-c4-preference"]
    [second] = [r for r in DEMO_REQUESTS if r.session_id == "demo-c4-grinder"]
    assert DEMO_REQUESTS.index(first) < DEMO_REQUESTS.index(second)
    assert first.user_id == second.user_id
    [remember] = rule_for(first)["reply"]["steps"]
    assert remember["tool_args"] == {"fact": REMEMBERED}
    [escalate] = rule_for(second)["reply"]["steps"]
    assert "email" in escalate["tool_args"]["summary"]
    assert escalate["tool_args"]["contact"] == "email"
    assert first_rule(second.message)["reply"]["steps"] == []  # no fact, no plan
    # Another customer saying the same words gets nothing of c4's.
    assert first_rule(f"Request:\n{second.message}")["reply"]["steps"] == []
