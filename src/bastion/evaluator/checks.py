"""The Evaluator's checks, each a small pure function from a tool's result to its problems.

Three kinds: the result's shape (`check_result_shape`: empty, or an error dressed as a value),
the tool's declared return type (its pydantic `TypeAdapter`, in lax mode because the
value has been through JSON: a ``datetime`` comes back as a string) and the step's ``expect``
checks, one function per key. An ``expect`` key with no check here is itself a problem: the plan
asked for something we cannot verify, and passing it silently would claim a check that never ran.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import TypeAdapter, ValidationError

from bastion.messages import Json, JsonObject

#: A check: ``(result, the expectation's argument) -> problem or None``.
Check = Callable[[Json, Json], str | None]


def check_return_type(adapter: TypeAdapter[Any], value: Json, *, tool_name: str) -> str | None:
    """The problem with `value` as the tool's declared return type, or None if it fits."""
    try:
        adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(result)'}: {err['msg']}"
            for err in exc.errors()
        )
        return f"result of {tool_name!r} does not match its declared return type: {fields}"
    return None


def check_keys(value: Json, keys: Json) -> str | None:
    """``{"keys": [...]}``: the result is an object holding each of these keys."""
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        return f"expectation 'keys' needs a list of key names, got {_short(keys)}"
    if not isinstance(value, Mapping):
        return f"expected an object with keys {_names(keys)}, got {_short(value)}"
    missing = [k for k in keys if k not in value]
    return f"result lacks key(s) {_names(missing)}" if missing else None


def check_non_empty(value: Json, wanted: Json) -> str | None:
    """``{"non_empty": true}``: the result is not None, "", [] or {}."""
    if not isinstance(wanted, bool):
        return f"expectation 'non_empty' needs true or false, got {_short(wanted)}"
    if wanted and (value is None or (isinstance(value, str | list | dict | tuple) and not value)):
        return f"result is empty ({_short(value)})"
    return None


def check_equals(value: Json, expected: Json) -> str | None:
    """``{"equals": {"key": value}}``: these top-level keys of the result have these values."""
    if not isinstance(expected, Mapping):
        return f"expectation 'equals' needs an object of key: value, got {_short(expected)}"
    if not isinstance(value, Mapping):
        return f"expected an object, got {_short(value)}"
    wrong = [
        f"result[{key!r}] is {_short(value[key]) if key in value else 'missing'}, "
        f"expected {_short(want)}"
        for key, want in expected.items()
        if key not in value or not _equal(value[key], want)
    ]
    return "; ".join(wrong) or None


#: ``status`` values that say a result is a failure dressed as a success.
ERROR_STATUSES = frozenset({"error", "failed", "failure"})


def check_result_shape(value: Json, *, tool_name: str, may_be_empty: bool) -> str | None:
    """The problem with a result that is empty or error-shaped, or None.

    Error-shaped: an object whose ``error`` is a non-empty text, whose ``ok`` or ``success`` is
    false, or whose ``status`` is one of `ERROR_STATUSES` (a tool that reports failure in its
    value instead of raising). Empty: None or blank text, unless `may_be_empty` (a tool with side
    effects may return nothing; a read that returns nothing found nothing it could say). An empty
    list or object is an answer ("no matches"), not an empty result.
    """
    if isinstance(value, Mapping):
        error = value.get("error")
        if isinstance(error, str) and error.strip():
            return f"result of {tool_name!r} reports an error: {_short(error)}"
        if value.get("ok") is False or value.get("success") is False:
            return f"result of {tool_name!r} reports a failure: {_short(value)}"
        status = value.get("status")
        if isinstance(status, str) and status.strip().lower() in ERROR_STATUSES:
            return f"result of {tool_name!r} has status {status!r}"
        return None
    if not may_be_empty and (value is None or (isinstance(value, str) and not value.strip())):
        return f"result of {tool_name!r} is empty ({_short(value)})"
    return None


#: Every ``expect`` key the Evaluator understands.
CHECKS: Mapping[str, Check] = {
    "keys": check_keys,
    "non_empty": check_non_empty,
    "equals": check_equals,
}


def check_expectations(expect: JsonObject, value: Json) -> list[str]:
    """Every problem of `value` against a step's ``expect``; an unknown key is a problem too."""
    problems = []
    for key, argument in expect.items():
        check = CHECKS.get(key)
        if check is None:
            problems.append(f"unknown expectation {key!r} (known: {', '.join(sorted(CHECKS))})")
            continue
        problem = check(value, argument)
        if problem is not None:
            problems.append(problem)
    return problems


def _equal(got: Json, want: Json) -> bool:
    # In Python True == 1, but a JSON true is not the number 1.
    if isinstance(got, bool) != isinstance(want, bool):
        return False
    return bool(got == want)


def _names(keys: list[str]) -> str:
    return ", ".join(map(repr, keys))


def _short(value: object, limit: int = 80) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"
