from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import BaseModel, TypeAdapter

from bastion.evaluator.checks import (
    CHECKS,
    check_equals,
    check_expectations,
    check_keys,
    check_non_empty,
    check_return_type,
)


class Order(BaseModel):
    id: str
    total: float
    placed_at: datetime


def test_return_type_accepts_a_json_value_in_lax_mode():
    adapter = TypeAdapter(Order)
    # A datetime and a number arrive as JSON text: lax validation takes them.
    value = {"id": "A-1", "total": "12.5", "placed_at": "2026-01-01T10:00:00Z"}

    assert check_return_type(adapter, value, tool_name="get_order") is None


def test_return_type_failure_names_the_field():
    problem = check_return_type(
        TypeAdapter(list[Order]), [{"id": "A-1", "total": "lots"}], tool_name="get_orders"
    )

    assert problem is not None
    assert problem.startswith("result of 'get_orders' does not match its declared return type: ")
    assert "0.total: Input should be a valid number" in problem
    assert "0.placed_at: Field required" in problem


def test_return_type_failure_of_a_scalar_says_result():
    problem = check_return_type(TypeAdapter(int), "seven", tool_name="count")

    assert problem is not None
    assert "(result): Input should be a valid integer" in problem


def test_keys():
    assert check_keys({"a": 1, "b": None}, ["a", "b"]) is None
    assert check_keys({"a": 1}, ["a", "b", "c"]) == "result lacks key(s) 'b', 'c'"
    assert check_keys([1], ["a"]) == "expected an object with keys 'a', got [1]"
    assert check_keys({"a": 1}, "a") == "expectation 'keys' needs a list of key names, got \"a\""
    assert check_keys({"a": 1}, [1]) == "expectation 'keys' needs a list of key names, got [1]"


@pytest.mark.parametrize("empty", [None, "", [], {}])
def test_non_empty_fails_on_empty_values(empty):
    assert check_non_empty(empty, True) is not None
    assert check_non_empty(empty, False) is None


@pytest.mark.parametrize("value", [0, False, "x", [0], {"a": None}])
def test_non_empty_passes_on_values(value):
    assert check_non_empty(value, True) is None


def test_non_empty_needs_a_boolean():
    assert check_non_empty("x", "yes") == "expectation 'non_empty' needs true or false, got \"yes\""


def test_non_empty_message():
    assert check_non_empty([], True) == "result is empty ([])"


def test_equals():
    result = {"status": "shipped", "paid": True, "count": 2}
    assert check_equals(result, {"status": "shipped", "count": 2}) is None
    assert check_equals(result, {"status": "lost"}) == (
        'result[\'status\'] is "shipped", expected "lost"'
    )
    assert check_equals(result, {"carrier": "UPS"}) == (
        "result['carrier'] is missing, expected \"UPS\""
    )
    assert check_equals("shipped", {"status": "shipped"}) == 'expected an object, got "shipped"'
    assert check_equals(result, ["status"]) == (
        "expectation 'equals' needs an object of key: value, got [\"status\"]"
    )


def test_equals_does_not_take_true_for_one():
    assert check_equals({"paid": True}, {"paid": 1}) == "result['paid'] is true, expected 1"
    assert check_equals({"n": 1}, {"n": 1.0}) is None


def test_expectations_collect_every_problem_and_refuse_unknown_keys():
    problems = check_expectations({"keys": ["id"], "non_empty": True, "matches_regex": "^A"}, {})

    assert problems == [
        "result lacks key(s) 'id'",
        "result is empty ({})",
        "unknown expectation 'matches_regex' (known: equals, keys, non_empty)",
    ]


def test_no_expectations_no_problems():
    assert check_expectations({}, None) == []
    assert set(CHECKS) == {"keys", "non_empty", "equals"}
