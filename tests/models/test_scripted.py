from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import (
    ConfigError,
    ModelBadRequest,
    ModelError,
    ModelRateLimited,
    ModelRefused,
    ModelTimeout,
    ModelUnavailable,
)
from bastion.models.interface import ChatRequest, ChatResponse, Usage, as_messages
from bastion.models.scripted import ScriptedModel, ScriptItem, UnexpectedModelCall


def ask(text: str, *, system: str = "you plan") -> ChatRequest:
    return ChatRequest(messages=as_messages([("system", system), ("user", text)]))


# -- sequence ------------------------------------------------------------------------------------


async def test_sequence_answers_in_order_with_rough_usage() -> None:
    model = ScriptedModel(["first answer", "second"])

    first = await model.complete(ask("12345678", system="1234"))  # 12 prompt characters
    second = await model.complete(ask("x", system=""))

    assert first.text == "first answer"
    assert first.model == "scripted:test"
    assert first.usage == Usage(input_tokens=3, output_tokens=3)  # 12/4, 12/4
    assert first.finish_reason == "stop"
    assert second.text == "second"
    assert second.usage == Usage(input_tokens=1, output_tokens=1)  # at least 1 each
    model.assert_consumed()


async def test_sequence_returns_a_scripted_response_as_is() -> None:
    scripted = ChatResponse(text="t", model="other", usage=Usage(input_tokens=9, output_tokens=8))
    model = ScriptedModel([scripted])

    assert await model.complete(ask("q")) is scripted


async def test_sequence_raises_a_scripted_exception() -> None:
    model = ScriptedModel([ModelTimeout("slow", model="m"), "after"])

    with pytest.raises(ModelTimeout, match="slow"):
        await model.complete(ask("q"))
    assert (await model.complete(ask("q"))).text == "after"


async def test_sequence_calls_a_scripted_function_with_the_request() -> None:
    seen: list[ChatRequest] = []

    def echo(request: ChatRequest) -> str:
        seen.append(request)
        return request.messages[-1].content.upper()

    def full(request: ChatRequest) -> ChatResponse:
        return ChatResponse(text="full", model="fn")

    model = ScriptedModel([echo, full], name="scripted:fn")
    request = ask("shout")

    assert (await model.complete(request)).text == "SHOUT"
    assert (await model.complete(ask("q"))).model == "fn"
    assert seen == [request]


async def test_a_function_returning_something_else_is_a_type_error() -> None:
    def not_text(request: ChatRequest) -> Any:
        return 42

    model = ScriptedModel([not_text])

    with pytest.raises(TypeError, match="must return str or ChatResponse, not int"):
        await model.complete(ask("q"))


async def test_a_call_past_the_end_fails_clearly_and_is_recorded() -> None:
    model = ScriptedModel(["only"], name="scripted:x")
    await model.complete(ask("one"))

    with pytest.raises(UnexpectedModelCall, match=r"unexpected call #2 to scripted:x") as caught:
        await model.complete(ask("two"))

    assert isinstance(caught.value, AssertionError)
    assert "'two'" in str(caught.value)
    assert [call.messages[-1].content for call in model.calls] == ["one", "two"]


async def test_assert_consumed_fails_on_leftovers() -> None:
    model = ScriptedModel(["used", "left over", "also left"])
    await model.complete(ask("q"))

    assert model.remaining == 2
    with pytest.raises(AssertionError, match=r"2 scripted response\(s\) were never used"):
        model.assert_consumed()


@pytest.mark.parametrize(
    ("item", "described"),
    [
        (ChatResponse(text="resp", model="m"), "a ChatResponse 'resp'"),
        (ModelTimeout("t"), "an exception ModelTimeout('t')"),
        (ask, "a callable ask"),
    ],
)
def test_assert_consumed_describes_the_next_item(item: ScriptItem, described: str) -> None:
    with pytest.raises(AssertionError, match=re.escape(described)):
        ScriptedModel([item]).assert_consumed()


# -- match ---------------------------------------------------------------------------------------


async def test_match_answers_with_the_first_rule_matching_the_last_user_message() -> None:
    model = ScriptedModel.matching(
        [(r"refund", "refund plan"), (r"order \d+", "order plan"), (r".*", "fallback")],
        name="scripted:shop",
    )
    request = ChatRequest(
        messages=as_messages(
            [("system", "refund policy"), ("user", "refund me"), ("user", "Where is ORDER 42?")]
        )
    )

    response = await model.complete(request)

    assert response.text == "order plan"  # earlier messages and the system prompt do not count
    assert response.model == "scripted:shop"
    assert response.usage.input_tokens >= 1
    assert (await model.complete(ask("I want a REFUND"))).text == "refund plan"
    assert (await model.complete(ask("I want a refund"))).text == "refund plan"  # reusable
    model.assert_consumed()  # rules are never used up


async def test_match_without_a_matching_rule_fails_clearly() -> None:
    model = ScriptedModel.matching([(r"refund", "plan")], name="scripted:m")

    with pytest.raises(UnexpectedModelCall, match=r"unexpected call #1 to scripted:m") as caught:
        await model.complete(ask("hello"))

    assert "'hello'" in str(caught.value)
    assert "['refund']" in str(caught.value)
    assert len(model.calls) == 1


async def test_match_without_a_user_message_matches_the_empty_string() -> None:
    model = ScriptedModel.matching([(r"^$", "nothing asked")])
    request = ChatRequest(messages=as_messages([("system", "s")]))

    assert (await model.complete(request)).text == "nothing asked"


async def test_match_rules_may_raise() -> None:
    model = ScriptedModel.matching([(r"boom", ModelUnavailable("down"))])

    with pytest.raises(ModelUnavailable, match="down"):
        await model.complete(ask("boom"))


def test_match_with_an_invalid_regex_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"rule #2: '\(' is not a valid regular expression"):
        ScriptedModel.matching([("ok", "a"), ("(", "b")])


# -- from_file -----------------------------------------------------------------------------------


def write(tmp_path: Path, content: object, name: str = "script.json") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


async def test_from_file_sequence(tmp_path: Path) -> None:
    plan = {"reasoning": "r", "steps": [{"tool_name": "lookup", "tool_args": {"id": 1}}]}
    path = write(
        tmp_path,
        {
            "mode": "sequence",
            "responses": [
                "plain text",
                plan,
                {"reply": {"error": "this object is a reply"}},
                {"reply": "explicit text"},
                {"error": "rate_limited", "retry_after_s": 2},
            ],
        },
    )

    model = ScriptedModel.from_file(path)

    assert model.name == f"scripted:{path}"
    assert (await model.complete(ask("a"))).text == "plain text"
    assert json.loads((await model.complete(ask("b"))).text) == plan
    assert json.loads((await model.complete(ask("c"))).text) == {"error": "this object is a reply"}
    assert (await model.complete(ask("d"))).text == "explicit text"
    with pytest.raises(ModelRateLimited) as caught:
        await model.complete(ask("e"))
    assert caught.value.retry_after_s == 2
    assert caught.value.model == model.name
    model.assert_consumed()


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("rate_limited", ModelRateLimited),
        ("unavailable", ModelUnavailable),
        ("timeout", ModelTimeout),
        ("bad_request", ModelBadRequest),
        ("refused", ModelRefused),
    ],
)
async def test_from_file_error_kinds(tmp_path: Path, kind: str, expected: type[ModelError]) -> None:
    path = write(tmp_path, {"mode": "sequence", "responses": [{"error": kind, "message": "why"}]})

    with pytest.raises(expected, match=r"scripted .* error from scripted:.*: why") as caught:
        await ScriptedModel.from_file(path).complete(ask("q"))

    assert type(caught.value) is expected


async def test_from_file_match(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        {
            "mode": "match",
            "rules": [
                {"when": "refund", "reply": {"steps": []}},
                {"when": "busy", "error": "rate_limited", "retry_after_s": 1.5},
                {"when": ".", "reply": "anything else"},
            ],
        },
    )
    model = ScriptedModel.from_file(path)

    assert json.loads((await model.complete(ask("REFUND please"))).text) == {"steps": []}
    assert (await model.complete(ask("hi"))).text == "anything else"
    for _ in range(2):  # a fresh exception each time
        with pytest.raises(ModelRateLimited) as caught:
            await model.complete(ask("are you busy"))
        assert caught.value.retry_after_s == 1.5


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("{not json", "Invalid JSON"),
        ({"mode": "random", "responses": ["x"]}, "mode"),
        ({"responses": ["x"]}, "mode"),
        ({"mode": "sequence", "responses": []}, "at least 1 item"),
        ({"mode": "sequence", "responses": [3]}, "responses.0"),
        ({"mode": "sequence", "responses": ["x"], "extra": 1}, "extra"),
        ({"mode": "sequence", "responses": ["ok", {"error": "exploded"}]}, "responses.1.error"),
        ({"mode": "sequence", "responses": [{"error": "timeout", "plan": 1}]}, "plan"),
        (
            {"mode": "sequence", "responses": [{"error": "timeout", "retry_after_s": 1}]},
            "'retry_after_s' applies only to 'error': 'rate_limited'",
        ),
        ({"mode": "match", "rules": []}, "at least 1 item"),
        ({"mode": "match", "rules": [{"when": "x"}]}, "exactly one of 'reply' and 'error'"),
        (
            {"mode": "match", "rules": [{"when": "x", "reply": "a", "error": "timeout"}]},
            "exactly one of 'reply' and 'error'",
        ),
        (
            {"mode": "match", "rules": [{"when": "x", "reply": "a", "message": "m"}]},
            "'message' applies only to an 'error'",
        ),
        ({"mode": "match", "rules": [{"when": "(", "reply": "a"}]}, "not a valid regular"),
        ({"mode": "match", "rules": [{"reply": "a"}]}, "when"),
        (
            {
                "mode": "match",
                "rules": [{"when": "x", "error": "rate_limited", "retry_after_s": -1}],
            },
            "retry_after_s",
        ),
    ],
)
def test_from_file_rejects_invalid_files_naming_file_and_problem(
    tmp_path: Path, content: object, problem: str
) -> None:
    path = write(tmp_path, content)

    with pytest.raises(ConfigError, match="invalid scripted model file") as caught:
        ScriptedModel.from_file(path)

    assert str(path) in str(caught.value)
    assert problem in str(caught.value)


def test_from_file_missing_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"

    with pytest.raises(ConfigError, match=f"cannot read scripted model file {path}"):
        ScriptedModel.from_file(path)


def test_from_file_binary_file_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.json"
    path.write_bytes(b"\xff\xfe\xfa")

    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        ScriptedModel.from_file(path)
