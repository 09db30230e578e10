from __future__ import annotations

import json
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel
from tests.planner.conftest import make_tool

from bastion.messages import PlanStep, StepRecord, StepStatus, ToolErrorKind, ToolOutcome
from bastion.planner.plan_schema import build_plan_schema, validate_plan
from bastion.planner.prompt import REFS_RULE, system_text
from bastion.planner.references import (
    BadReference,
    StepRef,
    check_plan,
    has_refs,
    parse,
    read_path,
    resolve_args,
    resolve_step,
    schema_at,
    without_refs,
)
from bastion.router.interface import ToolSpec


def ref(path: str) -> dict[str, str]:
    return {"$from": path}


class Item(BaseModel):
    sku: str
    qty: int


class OrderOut(BaseModel):
    order_id: str
    total: float
    items: list[Item]
    note: str | None = None


class FindArgs(BaseModel):
    email: str


class ShipArgs(BaseModel):
    order_id: str
    qty: int = 1


@pytest.fixture
def find() -> ToolSpec:
    return make_tool(
        "find", FindArgs, return_schema=OrderOut.model_json_schema(), description="Find."
    )


@pytest.fixture
def ship() -> ToolSpec:
    return make_tool("ship", ShipArgs, description="Ship.")


def step(step_id: int, tool: str, **args: Any) -> PlanStep:
    return PlanStep(step_id=step_id, description=tool, tool_name=tool, tool_args=args)


def done(step_id: int, value: Any, status: StepStatus = StepStatus.SUCCESS) -> StepRecord:
    outcome = (
        ToolOutcome.success(value)
        if status is StepStatus.SUCCESS
        else ToolOutcome.failure(ToolErrorKind.TOOL_ERROR, "broke")
    )
    return StepRecord(step=step(step_id, "find", email="x"), status=status, outcome=outcome)


# -- syntax ------------------------------------------------------------------------------------


def test_parse_reads_the_step_and_the_path():
    assert parse(ref("steps[3].result.items[0].sku")) == StepRef(
        step_id=3, path=("items", 0, "sku"), text="steps[3].result.items[0].sku"
    )
    assert parse(ref("steps[0].result")).path == ()


@pytest.mark.parametrize(
    "value",
    [ref("step[0].result.x"), ref("steps[0].x"), ref("steps[-1].result"), {"$from": 3}, "x"],
)
def test_malformed_references_say_how_to_write_one(value):
    with pytest.raises(BadReference, match=r"write {\"\$from\": \"steps\[0\]\.result\.field\"}"):
        parse(value)


def test_only_a_lone_from_key_is_a_reference():
    assert has_refs({"a": ref("steps[0].result")})
    assert not has_refs({"a": {"$from": "x", "other": 1}})
    assert without_refs({"a": ref("steps[0].result"), "b": 2}) == {"b": 2}


# -- return schemas ----------------------------------------------------------------------------


def test_schema_at_follows_defs_lists_and_optionals(find):
    schema = find.return_schema
    assert schema is not None
    assert schema_at(schema, parse(ref("steps[0].result.items[0].sku")), tool_name="find") == {
        "title": "Sku",
        "type": "string",
    }
    note = schema_at(schema, parse(ref("steps[0].result.note")), tool_name="find")
    assert "anyOf" in note


def test_schema_at_names_the_fields_there_are(find):
    assert find.return_schema is not None
    with pytest.raises(BadReference) as caught:
        schema_at(find.return_schema, parse(ref("steps[0].result.orderid")), tool_name="find")
    assert "has no field 'orderid' (its fields: order_id, total, items, note)" in str(caught.value)
    with pytest.raises(BadReference, match=r"steps\[0\]\.result\.total is not a list"):
        schema_at(find.return_schema, parse(ref("steps[0].result.total[0]")), tool_name="find")


def test_a_free_form_result_cannot_rule_a_path_out():
    assert schema_at({"type": "object"}, parse(ref("steps[0].result.a.b")), tool_name="t") == {}
    typed = {"type": "object", "additionalProperties": {"type": "integer"}}
    assert schema_at(typed, parse(ref("steps[0].result.a")), tool_name="t") == {"type": "integer"}


# -- checking plans ----------------------------------------------------------------------------


def lookup_in(*tools: ToolSpec):
    by_name = {t.name: t for t in tools}
    return by_name.get


def test_a_good_plan_has_no_problems(find, ship):
    steps = [step(0, "find", email="a"), step(1, "ship", order_id=ref("steps[0].result.order_id"))]
    assert check_plan(steps, tool=lookup_in(find, ship)) == {}


def test_references_to_later_or_missing_steps_are_problems(find, ship):
    steps = [step(0, "ship", order_id=ref("steps[1].result.order_id")), step(1, "find", email="a")]
    problems = check_plan(steps, tool=lookup_in(find, ship))
    assert list(problems) == [0]
    assert "not an earlier step (earlier step ids: none)" in problems[0][0]
    assert problems[0][0].startswith("steps[0].tool_args.order_id:")


def test_a_type_clash_with_the_argument_is_a_problem(find, ship):
    steps = [
        step(0, "find", email="a"),
        step(1, "ship", order_id="x", qty=ref("steps[0].result.note")),
    ]
    problems = check_plan(steps, tool=lookup_in(find, ship))
    assert "is null or string, but argument 'qty' needs integer" in problems[1][0]
    # A number where a number is wanted, or an integer where a number is, is fine.
    fine = [
        step(0, "find", email="a"),
        step(1, "ship", order_id=ref("steps[0].result.items[0].sku")),
    ]
    assert check_plan(fine, tool=lookup_in(find, ship)) == {}


def test_references_into_the_history_use_the_actual_results(find, ship):
    history = [done(0, {"order_id": "o-1"}), done(1, None, status=StepStatus.FAILED)]
    good = [step(2, "ship", order_id=ref("steps[0].result.order_id"))]
    assert check_plan(good, tool=lookup_in(find, ship), history=history) == {}
    missing = [step(2, "ship", order_id=ref("steps[0].result.id"))]
    assert (
        "has no field 'id' (its fields: order_id)"
        in check_plan(missing, tool=lookup_in(find, ship), history=history)[0][0]
    )
    failed = [step(2, "ship", order_id=ref("steps[1].result.order_id"))]
    assert (
        "did not succeed (failed)"
        in check_plan(failed, tool=lookup_in(find, ship), history=history)[0][0]
    )
    clash = [step(2, "ship", order_id="o", qty=ref("steps[0].result.order_id"))]
    assert "needs integer" in check_plan(clash, tool=lookup_in(find, ship), history=history)[0][0]


def test_a_tool_without_a_return_schema_is_checked_only_at_the_call(ship):
    bare = make_tool("bare", FindArgs)
    steps = [step(0, "bare", email="a"), step(1, "ship", order_id=ref("steps[0].result.anything"))]
    assert check_plan(steps, tool=lookup_in(bare, ship)) == {}


# -- resolving ---------------------------------------------------------------------------------


def test_resolve_replaces_references_and_keeps_other_values():
    history = [done(0, {"order": {"id": 7, "lines": [{"sku": "s1"}]}})]
    args = {"id": ref("steps[0].result.order.id"), "sku": ref("steps[0].result.order.lines[0].sku")}
    assert resolve_args({**args, "note": "hi"}, history) == {"id": 7, "sku": "s1", "note": "hi"}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("steps[0].result.nope", "has no field 'nope' (its fields: order)"),
        ("steps[0].result.order.lines[5]", "is a list of 1, so [5] does not exist"),
        ("steps[0].result.order.id.x", "has no field 'x' (a integer)"),
        ("steps[4].result", "refers to step 4, which has no successful result"),
    ],
)
def test_resolve_says_what_is_missing(path, message):
    history = [done(0, {"order": {"id": 7, "lines": [{"sku": "s1"}]}})]
    with pytest.raises(BadReference) as caught:
        resolve_args({"x": ref(path)}, history)
    assert message in str(caught.value)
    assert str(caught.value).startswith("argument 'x':")


def test_resolve_step_names_the_step_and_leaves_plain_steps_alone():
    plain = step(1, "ship", order_id="o")
    assert resolve_step(plain, []) is plain
    with pytest.raises(BadReference, match=r"^step 1 \(ship\): argument 'order_id'"):
        resolve_step(step(1, "ship", order_id=ref("steps[0].result")), [])


def test_read_path_of_the_whole_result():
    assert read_path([1, 2], parse(ref("steps[0].result[1]"))) == 2


# -- the plan schema and prompt ----------------------------------------------------------------


def plan_with(*steps: tuple[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "reasoning": "r",
        "steps": [{"description": "d", "tool_name": n, "tool_args": a} for n, a in steps],
    }


def test_the_plan_schema_admits_references_only_when_asked(find, ship):
    with_refs = build_plan_schema([find, ship], max_steps=3, step_refs=True)
    without = build_plan_schema([find, ship], max_steps=3)
    data = plan_with(("find", {"email": "a"}), ("ship", {"order_id": ref("steps[0].result.x")}))
    Draft202012Validator.check_schema(with_refs)
    assert validate_plan(data, with_refs) == []
    assert validate_plan(data, without) != []
    # No property is named "$ref" anywhere: grammar compilers read that key as a schema link.
    assert '"$ref": {' not in json.dumps(with_refs)


def test_a_wrong_argument_is_reported_in_its_own_terms_when_references_are_allowed(find, ship):
    schema = build_plan_schema([find, ship], max_steps=3, step_refs=True)
    wrong_type = plan_with(("ship", {"order_id": "o", "qty": "two"}))
    assert validate_plan(wrong_type, schema) == [
        'steps[0].tool_args.qty: expected integer, got string "two"'
    ]
    long_ref = plan_with(("ship", {"order_id": ref("x" * 300)}))
    assert validate_plan(long_ref, schema) == [
        "steps[0].tool_args.order_id.$from: text of 300 characters; at most 200 allowed"
    ]


def test_the_prompt_explains_references_when_they_are_on(find):
    assert REFS_RULE in system_text([find], max_steps=2, step_refs=True)
    assert REFS_RULE not in system_text([find], max_steps=2)
    assert REFS_RULE not in system_text([], max_steps=2, step_refs=True)
