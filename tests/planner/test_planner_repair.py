from __future__ import annotations

import json

import pytest

from bastion.models.interface import ChatResponse
from bastion.planner.plan_schema import build_plan_schema
from bastion.planner.repair import MAX_LISTED_PROBLEMS, read_answer, repair_message, strip_fence
from bastion.router.interface import ToolSpec

VALID = {
    "reasoning": "look it up",
    "steps": [{"description": "find", "tool_name": "lookup_order", "tool_args": {"order_id": "7"}}],
}


def _read(text: str, tools: list[ToolSpec], *, finish_reason: str = "stop"):
    response = ChatResponse(text=text, model="m", finish_reason=finish_reason)
    schema = build_plan_schema(tools, max_steps=3)
    return read_answer(response, schema=schema, tools={t.name: t for t in tools})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"a": 1}', '{"a": 1}'),
        ('  {"a": 1}\n', '{"a": 1}'),
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}\n```', '{"a": 1}'),
        ('```JSON {"a": 1}```', '{"a": 1}'),
        ('\n```json\n{"a": 1}\n```\n', '{"a": 1}'),
        ('Here: ```json\n{"a": 1}\n```', 'Here: ```json\n{"a": 1}\n```'),
    ],
)
def test_strip_fence(text, expected):
    assert strip_fence(text) == expected


def test_a_valid_answer_gives_the_plan(lookup):
    answer = _read(json.dumps(VALID), [lookup])

    assert answer.plan == VALID
    assert answer.problems == ()


def test_a_fenced_valid_answer_gives_the_plan(lookup):
    answer = _read(f"```json\n{json.dumps(VALID)}\n```", [lookup])

    assert answer.plan == VALID


def test_a_length_cut_is_a_problem_even_if_it_parses(lookup):
    answer = _read(json.dumps(VALID), [lookup], finish_reason="length")

    assert answer.plan is None
    assert len(answer.problems) == 1
    assert "cut off at the length limit" in answer.problems[0]
    assert "shorter plan" in answer.problems[0]


def test_an_empty_answer(lookup):
    assert _read("  ", [lookup]).problems == ("your answer was empty",)


def test_invalid_json_says_where(lookup):
    answer = _read('{"reasoning": "x", "steps": [}', [lookup])

    assert answer.plan is None
    assert answer.problems == (
        "your answer is not valid JSON (Expecting value at line 1 column 30); "
        "answer with one JSON object and nothing else",
    )


def test_schema_problems_are_listed(lookup):
    answer = _read('{"reasoning": "x", "steps": [], "extra": 1}', [lookup])

    assert answer.plan is None
    assert answer.problems == ("plan: unexpected key(s) 'extra' (allowed: reasoning, steps)",)


def test_the_tools_own_arg_checks_apply_after_the_schema(lookup, refund):
    plan = {
        "reasoning": "refund",
        "steps": [
            {"description": "a", "tool_name": "lookup_order", "tool_args": {"order_id": "7"}},
            {
                "description": "b",
                "tool_name": "refund_order",
                "tool_args": {"order_id": "B-7", "amount": 3},
            },
        ],
    }

    answer = _read(json.dumps(plan), [lookup, refund])

    assert answer.plan is None
    (problem,) = answer.problems
    assert problem.startswith("steps[1].tool_args: invalid args for tool 'refund_order': ")
    assert "order ids start with 'A-'" in problem


def test_repair_message_lists_problems_and_repeats_the_request():
    message = repair_message(["a is wrong", "b is missing"], request="Refund order A-7, please.")

    assert message.role == "user"
    assert message.content == (
        "Your last answer could not be used:\n"
        "- a is wrong\n"
        "- b is missing\n"
        "Answer again with one JSON object only, in the required shape, for this request:\n"
        "Refund order A-7, please."
    )


def test_repair_message_caps_the_list():
    problems = [f"problem {i}" for i in range(MAX_LISTED_PROBLEMS + 5)]

    content = repair_message(problems, request="r").content

    assert f"- problem {MAX_LISTED_PROBLEMS - 1}\n" in content
    assert f"problem {MAX_LISTED_PROBLEMS}\n" not in content
    assert "- and 5 more problem(s)" in content
