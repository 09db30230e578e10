from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal

import pytest
from jsonschema import Draft202012Validator
from pydantic import BaseModel, ConfigDict, Field

from bastion.errors import ConfigError
from bastion.planner.plan_schema import (
    ARG_MAX_ITEMS,
    ARG_MAX_LENGTH,
    DESCRIPTION_MAX_LENGTH,
    REASONING_MAX_LENGTH,
    args_root,
    build_plan_schema,
    validate_plan,
)
from bastion.router.interface import ToolSpec
from bastion.router.registry import make_tool

MakeTool = Callable[..., ToolSpec]


class Line(BaseModel):
    sku: str
    quantity: int
    tags: list[str] = []


class OrderArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    lines: list[Line]
    note: str = Field(default="", max_length=40)
    priority: Literal["low", "high"] = "low"
    metadata: dict[str, int] = {}


class Node(BaseModel):
    name: str
    children: list[Node] = []


def _step(tool: str, args: dict[str, Any], description: str = "do it") -> dict[str, Any]:
    return {"description": description, "tool_name": tool, "tool_args": args}


def _plan(*steps: object, reasoning: str = "because") -> dict[str, Any]:
    return {"reasoning": reasoning, "steps": list(steps)}


def _branches(schema: dict[str, Any]) -> list[dict[str, Any]]:
    branches: list[dict[str, Any]] = schema["properties"]["steps"]["items"]["anyOf"]
    return branches


# -- shape -------------------------------------------------------------------------------------


def test_one_branch_per_tool_with_const_name_and_the_tools_args(lookup, refund):
    schema = build_plan_schema([lookup, refund], max_steps=5)

    branches = _branches(schema)
    assert [b["properties"]["tool_name"] for b in branches] == [
        {"const": "lookup_order"},
        {"const": "refund_order"},
    ]
    for branch, spec in zip(branches, [lookup, refund], strict=True):
        assert branch["required"] == ["description", "tool_name", "tool_args"]
        assert branch["additionalProperties"] is False
        args = branch["properties"]["tool_args"]
        assert args["additionalProperties"] is False
        assert set(args["properties"]) == set(spec.args_schema["properties"])
        assert args["required"] == spec.args_schema["required"]
    assert schema["required"] == ["reasoning", "steps"]
    assert schema["additionalProperties"] is False
    Draft202012Validator.check_schema(schema)


def test_every_string_and_array_is_bounded(lookup, tool_factory: MakeTool):
    order = tool_factory("place_order", OrderArgs)
    schema = build_plan_schema([lookup, order], max_steps=7)

    assert schema["properties"]["reasoning"]["maxLength"] == REASONING_MAX_LENGTH
    assert schema["properties"]["steps"]["maxItems"] == 7
    lookup_branch, order_branch = _branches(schema)
    assert lookup_branch["properties"]["description"]["maxLength"] == DESCRIPTION_MAX_LENGTH
    assert lookup_branch["properties"]["tool_args"]["properties"]["order_id"]["maxLength"] == (
        ARG_MAX_LENGTH
    )
    order_args = order_branch["properties"]["tool_args"]["properties"]
    assert order_args["lines"]["maxItems"] == ARG_MAX_ITEMS
    # The tool's own bound wins over the default.
    assert order_args["note"]["maxLength"] == 40
    # Models referenced through $defs are bounded (and closed) too.
    line = schema["$defs"]["place_order.Line"]
    assert line["properties"]["sku"]["maxLength"] == ARG_MAX_LENGTH
    assert line["properties"]["tags"]["maxItems"] == ARG_MAX_ITEMS
    assert line["properties"]["tags"]["items"]["maxLength"] == ARG_MAX_LENGTH
    assert line["additionalProperties"] is False


def test_a_free_form_mapping_argument_keeps_its_value_schema(tool_factory: MakeTool):
    schema = build_plan_schema([tool_factory("place_order", OrderArgs)], max_steps=1)

    metadata = _branches(schema)[0]["properties"]["tool_args"]["properties"]["metadata"]
    assert metadata["additionalProperties"] == {"type": "integer"}


def test_the_tools_own_schema_is_never_mutated(lookup, tool_factory: MakeTool):
    order = tool_factory("place_order", OrderArgs)
    before = copy.deepcopy([dict(lookup.args_schema), dict(order.args_schema)])

    schema = build_plan_schema([lookup, order], max_steps=3)
    # Changing the plan schema must not reach back into the tools either.
    priority = _branches(schema)[1]["properties"]["tool_args"]["properties"]["priority"]
    priority["enum"].append("urgent")
    schema["$defs"]["place_order.Line"]["properties"]["sku"]["maxLength"] = 1

    assert [dict(lookup.args_schema), dict(order.args_schema)] == before


def test_no_tools_means_no_steps_at_all():
    schema = build_plan_schema([], max_steps=5)

    assert schema["properties"]["steps"]["maxItems"] == 0
    assert "items" not in schema["properties"]["steps"]
    Draft202012Validator.check_schema(schema)
    assert validate_plan(_plan(), schema) == []
    assert validate_plan(_plan(_step("anything", {})), schema) == [
        "steps: has 1 item(s) but must be empty"
    ]


def test_refs_into_the_tools_defs_are_hoisted_and_still_resolve(tool_factory: MakeTool):
    schema = build_plan_schema([tool_factory("place_order", OrderArgs)], max_steps=2)

    lines = _branches(schema)[0]["properties"]["tool_args"]["properties"]["lines"]
    assert lines["items"] == {"$ref": "#/$defs/place_order.Line"}
    ok = _plan(_step("place_order", {"lines": [{"sku": "X1", "quantity": 2}]}))
    assert validate_plan(ok, schema) == []
    bad = _plan(_step("place_order", {"lines": [{"sku": "X1", "quantity": "two"}]}))
    assert validate_plan(bad, schema) == [
        'steps[0].tool_args.lines[0].quantity: expected integer, got string "two"'
    ]


def test_a_self_referencing_args_model_is_inlined_at_the_root(tool_factory: MakeTool):
    tree = tool_factory("make_tree", Node)
    assert "$ref" in tree.args_schema  # pydantic's shape for a recursive root model

    schema = build_plan_schema([tree], max_steps=1)

    args = _branches(schema)[0]["properties"]["tool_args"]
    assert "$ref" not in args
    assert set(args["properties"]) == {"name", "children"}
    nested = {"name": "root", "children": [{"name": "leaf", "children": []}]}
    assert validate_plan(_plan(_step("make_tree", nested)), schema) == []
    bad = {"name": "root", "children": [{"name": 3}]}
    assert validate_plan(_plan(_step("make_tree", bad)), schema) == [
        "steps[0].tool_args.children[0].name: expected string, got integer 3"
    ]


def test_args_root_leaves_an_ordinary_schema_alone(lookup):
    assert args_root(lookup.args_schema) is lookup.args_schema
    dangling = {"$ref": "#/$defs/Missing", "$defs": {}}
    assert args_root(dangling) is dangling


def test_refs_in_definitions_are_moved_like_defs(tool_factory: MakeTool):
    spec = tool_factory("old_style", Line)
    legacy = {
        "type": "object",
        "properties": {"line": {"$ref": "#/definitions/Inner"}},
        "definitions": {"Inner": {"type": "object", "properties": {"x": {"type": "string"}}}},
    }
    spec = ToolSpec(**{**_fields(spec), "args_schema": legacy})

    schema = build_plan_schema([spec], max_steps=1)

    line = _branches(schema)[0]["properties"]["tool_args"]["properties"]["line"]
    assert line == {"$ref": "#/$defs/old_style.Inner"}
    assert schema["$defs"]["old_style.Inner"]["properties"]["x"]["maxLength"] == ARG_MAX_LENGTH


def test_a_ref_outside_the_tools_defs_is_a_config_error(tool_factory: MakeTool):
    spec = tool_factory("weird", Line)
    odd = {"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}
    spec = ToolSpec(**{**_fields(spec), "args_schema": odd})

    with pytest.raises(ConfigError, match=r"tool 'weird'.*https://example.com/s.json"):
        build_plan_schema([spec], max_steps=1)


def test_two_tools_with_one_name_are_a_config_error(lookup):
    with pytest.raises(ConfigError, match="both named 'lookup_order'"):
        build_plan_schema([lookup, lookup], max_steps=1)


def _fields(spec: ToolSpec) -> dict[str, Any]:
    return {name: getattr(spec, name) for name in ToolSpec.__dataclass_fields__}


# -- validation messages -----------------------------------------------------------------------


def test_a_valid_plan_has_no_problems(lookup, refund):
    schema = build_plan_schema([lookup, refund], max_steps=3)
    plan = _plan(
        _step("lookup_order", {"order_id": "A-1"}),
        _step("refund_order", {"order_id": "A-1", "amount": 5.0, "reason": None}),
    )
    assert validate_plan(plan, schema) == []


def test_an_unknown_tool_is_named_with_the_available_ones(lookup, refund):
    schema = build_plan_schema([lookup, refund], max_steps=3)
    plan = _plan(_step("lookup_order", {"order_id": "A-1"}), _step("delete_order", {}))

    assert validate_plan(plan, schema) == [
        "steps[1].tool_name: unknown tool 'delete_order'; available: lookup_order, refund_order"
    ]


def test_bad_args_for_a_known_tool_report_only_that_tools_branch(lookup, refund):
    schema = build_plan_schema([lookup, refund], max_steps=3)
    plan = _plan(_step("refund_order", {"order": "A-1", "amount": "lots"}))

    problems = validate_plan(plan, schema)

    assert sorted(problems) == [
        'steps[0].tool_args.amount: expected number, got string "lots"',
        "steps[0].tool_args: missing required key(s) 'order_id'",
        "steps[0].tool_args: unexpected key(s) 'order' (allowed: order_id, amount, reason)",
    ]
    assert not any("lookup_order" in p for p in problems)


def test_a_wrong_type_for_an_optional_arg_names_both_types(refund):
    schema = build_plan_schema([refund], max_steps=1)
    plan = _plan(_step("refund_order", {"order_id": "A-1", "amount": 1, "reason": 7}))

    assert validate_plan(plan, schema) == [
        "steps[0].tool_args.reason: expected string or null, got integer 7"
    ]


def test_extra_keys_anywhere_are_named(lookup):
    schema = build_plan_schema([lookup], max_steps=1)
    step = {**_step("lookup_order", {"order_id": "A-1"}), "why": "x"}
    plan = {**_plan(step), "confidence": 0.9}

    assert validate_plan(plan, schema) == [
        "steps[0]: unexpected key(s) 'why' (allowed: description, tool_name, tool_args)",
        "plan: unexpected key(s) 'confidence' (allowed: reasoning, steps)",
    ]


def test_too_many_steps(lookup):
    schema = build_plan_schema([lookup], max_steps=2)
    plan = _plan(*[_step("lookup_order", {"order_id": "A-1"})] * 3)

    assert validate_plan(plan, schema) == ["steps: has 3 items; at most 2 allowed"]


def test_over_long_texts_give_their_length_not_their_content(lookup):
    schema = build_plan_schema([lookup], max_steps=1)
    plan = _plan(
        _step("lookup_order", {"order_id": "A" * 501}, description="d" * 201),
        reasoning="r" * 601,
    )

    assert validate_plan(plan, schema) == [
        "reasoning: text of 601 characters; at most 600 allowed",
        "steps[0].description: text of 201 characters; at most 200 allowed",
        "steps[0].tool_args.order_id: text of 501 characters; at most 500 allowed",
    ]


def test_a_step_without_a_tool_name_lists_the_tools(lookup, refund):
    schema = build_plan_schema([lookup, refund], max_steps=2)
    plan = _plan({"description": "d", "tool_args": {}}, "lookup it")

    assert validate_plan(plan, schema) == [
        "steps[0]: needs a 'tool_name', one of: lookup_order, refund_order",
        'steps[1]: expected object, got string "lookup it"',
    ]


def test_missing_top_level_keys_and_wrong_root(lookup):
    schema = build_plan_schema([lookup], max_steps=1)

    assert validate_plan({"steps": []}, schema) == ["plan: missing required key(s) 'reasoning'"]
    assert validate_plan([1, 2], schema) == ["plan: expected object, got array [1, 2]"]


def test_const_and_enum_failures_say_what_is_allowed(tool_factory: MakeTool):
    schema = build_plan_schema([tool_factory("place_order", OrderArgs)], max_steps=1)
    plan = _plan(_step("place_order", {"lines": [], "priority": "urgent"}))

    assert validate_plan(plan, schema) == [
        'steps[0].tool_args.priority: must be one of "low", "high", got "urgent"'
    ]
    const_schema = {"type": "object", "properties": {"v": {"const": 1}}}
    assert validate_plan({"v": 2}, const_schema) == ["v: must be 1, got 2"]


def test_nested_any_of_without_plain_types_reports_the_closest_branch():
    schema = {
        "anyOf": [
            {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
            {"type": "integer"},
        ]
    }

    assert validate_plan({"a": 5}, schema) == [
        "plan: matches none of the allowed forms; closest: a: expected string, got integer 5"
    ]
    assert validate_plan({}, schema) == [
        "plan: matches none of the allowed forms; closest: missing required key(s) 'a'"
    ]


def test_other_keywords_fall_back_to_a_short_jsonschema_message():
    schema = {"type": "integer", "minimum": 10}

    assert validate_plan(3, schema) == ["plan: 3 is less than the minimum of 10"]


def test_a_one_of_matching_two_branches_says_so():
    schema = {"oneOf": [{"type": "integer"}, {"minimum": 0}]}

    (problem,) = validate_plan(3, schema)
    assert problem.startswith("plan: 3 is valid under each of")


async def _place_order(customer_id: str, lines: list[Line], note: str | None = None) -> str:
    """Place an order for a customer."""
    return "ok"


def test_a_tool_from_the_registry_gets_a_working_branch():
    spec = make_tool(_place_order, name="place_order", side_effects=True)
    schema = build_plan_schema([spec], max_steps=2)
    Draft202012Validator.check_schema(schema)

    ok = _step("place_order", {"customer_id": "C-1", "lines": [{"sku": "X", "quantity": 1}]})
    bad = _step("place_order", {"customer_id": "C-1", "lines": [{"sku": "X"}], "vip": True})

    assert validate_plan(_plan(ok), schema) == []
    assert sorted(validate_plan(_plan(bad), schema)) == [
        "steps[0].tool_args.lines[0]: missing required key(s) 'quantity'",
        "steps[0].tool_args: unexpected key(s) 'vip' (allowed: customer_id, lines, note)",
    ]
