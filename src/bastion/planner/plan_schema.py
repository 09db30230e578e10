"""The plan's JSON schema, built per run from the caller's tools, and readable validation of it.

DESIGN.md §2: each step is an ``anyOf`` with one branch per tool, ``tool_name`` a ``const`` and
``tool_args`` that tool's args schema. With a plain enum of names and free-form args, small models
invent argument names; with branches, constrained decoding ties the args to the chosen tool. Every
string and array is bounded and every object closed (``additionalProperties: false``), so that a
constrained decoder cannot run on until ``max_tokens`` and a model cannot smuggle in extra keys.

The tools' own schemas are copied, never mutated: a `ToolSpec` is shared by every run. Their
``$defs`` are hoisted to the plan's root under ``<tool>.<name>``, their ``$ref`` values rewritten:
a ``$ref`` inside an embedded schema resolves against the root of the document it sits in.

`validate_plan` turns jsonschema's errors into sentences a model can act on in a repair round:
for a step that fails every branch, it reports the errors of the branch the step meant (the one
whose ``tool_name`` it gave), or names the unknown tool and the ones available.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError, best_match

from bastion.errors import ConfigError
from bastion.planner.references import allow_refs, is_ref, is_ref_branches
from bastion.router.interface import ToolSpec

REASONING_MAX_LENGTH = 600
DESCRIPTION_MAX_LENGTH = 200
#: Bounds added to a tool's args schema where it sets none.
ARG_MAX_LENGTH = 500
ARG_MAX_ITEMS = 20

_DEF_KEYS = ("$defs", "definitions")
# Keywords whose value is one subschema, a list of them, or a mapping of names to them.
_ONE = ("items", "not", "if", "then", "else", "contains", "propertyNames", "unevaluatedItems")
_MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
_NAMED = ("properties", "patternProperties", "dependentSchemas")


def build_plan_schema(
    tools: Sequence[ToolSpec], *, max_steps: int, step_refs: bool = False
) -> dict[str, Any]:
    """The JSON schema a plan must follow, allowing only `tools`.

    Args:
        tools: The tools this caller may use; a step can name no other.
        max_steps: The most steps a plan may have.
        step_refs: Whether each top-level argument may instead be a reference to an earlier
            step's result (`bastion.planner.references`): an ``anyOf`` of its own schema and
            the reference's.

    Returns:
        A fresh Draft 2020-12 schema (safe to change; it shares nothing with the tools).

    Raises:
        ConfigError: two tools share a name, or a tool's args schema has a ``$ref`` that
            cannot be moved (one pointing outside its own ``$defs``).
    """
    defs: dict[str, Any] = {}
    seen: set[str] = set()
    branches = []
    for spec in tools:
        if spec.name in seen:
            raise ConfigError(f"two tools are both named {spec.name!r}: tool names must be unique")
        seen.add(spec.name)
        branches.append(_branch(spec, defs, step_refs=step_refs))
    steps: dict[str, Any] = {"type": "array", "maxItems": max_steps if tools else 0}
    if branches:
        steps["items"] = {"anyOf": branches}
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string", "maxLength": REASONING_MAX_LENGTH},
            "steps": steps,
        },
        "required": ["reasoning", "steps"],
        "additionalProperties": False,
    }
    if defs:
        schema["$defs"] = defs
    return schema


def _branch(spec: ToolSpec, defs: dict[str, Any], *, step_refs: bool) -> dict[str, Any]:
    prefix = f"{spec.name}."
    source = args_root(spec.args_schema)
    for key in _DEF_KEYS:
        for name, sub in (source.get(key) or {}).items():
            defs[prefix + name] = _bounded(sub, spec.name, prefix)
    args = _bounded({k: v for k, v in source.items() if k not in _DEF_KEYS}, spec.name, prefix)
    args["additionalProperties"] = False
    args.setdefault("type", "object")
    if step_refs:
        args = allow_refs(args)
    return {
        "type": "object",
        "properties": {
            "description": {"type": "string", "maxLength": DESCRIPTION_MAX_LENGTH},
            "tool_name": {"const": spec.name},
            "tool_args": args,
        },
        "required": ["description", "tool_name", "tool_args"],
        "additionalProperties": False,
    }


def args_root(schema: Mapping[str, Any]) -> Mapping[str, Any]:
    """A tool's args schema with a root ``$ref`` into its own ``$defs`` inlined.

    pydantic writes a self-referencing args model as ``{"$ref": "#/$defs/Model", "$defs": ...}``;
    closing that root with ``additionalProperties: false`` would forbid every key, and a reader
    looking for ``properties`` would find none.
    """
    ref = schema.get("$ref")
    if not isinstance(ref, str) or "properties" in schema:
        return schema
    for key in _DEF_KEYS:
        head = f"#/{key}/"
        target = (schema.get(key) or {}).get(_unescape(ref.removeprefix(head)))
        if ref.startswith(head) and isinstance(target, Mapping):
            return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _bounded(node: Any, tool: str, prefix: str) -> Any:
    """A copy of a schema node: strings and arrays bounded, objects with properties closed."""
    if isinstance(node, list):
        return [_bounded(item, tool, prefix) for item in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _ONE or key in _MANY or key == "additionalProperties":
            out[key] = _bounded(value, tool, prefix)
        elif key in _NAMED and isinstance(value, Mapping):
            out[key] = {name: _bounded(sub, tool, prefix) for name, sub in value.items()}
        elif key == "$ref" and isinstance(value, str):
            out[key] = _moved_ref(value, tool, prefix)
        else:
            out[key] = copy.deepcopy(value)
    types = _types(out)
    if "string" in types:
        out.setdefault("maxLength", ARG_MAX_LENGTH)
    if "array" in types:
        out.setdefault("maxItems", ARG_MAX_ITEMS)
    if "properties" in out:
        out.setdefault("additionalProperties", False)
    return out


def _moved_ref(ref: str, tool: str, prefix: str) -> str:
    for key in _DEF_KEYS:
        head = f"#/{key}/"
        if ref.startswith(head):
            return "#/$defs/" + _escape(prefix) + ref.removeprefix(head)
    raise ConfigError(
        f"tool {tool!r}: its args schema has a $ref the planner cannot embed ({ref!r}); "
        "only references into the schema's own $defs are supported"
    )


def _types(node: Mapping[str, Any]) -> set[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return set()


def _escape(name: str) -> str:
    # JSON Pointer (RFC 6901): "~" and "/" are written "~0" and "~1" inside a pointer.
    return name.replace("~", "~0").replace("/", "~1")


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


# -- validation --------------------------------------------------------------------------------


def validate_plan(data: object, schema: Mapping[str, Any]) -> list[str]:
    """Every way `data` fails `schema`, as short sentences that say where and what.

    Args:
        data: The parsed JSON answer.
        schema: A schema from `build_plan_schema`.

    Returns:
        The problems, in the schema's order; empty when `data` is a valid plan.
    """
    validator = Draft202012Validator(schema)
    problems: list[str] = []
    for error in validator.iter_errors(data):
        problems.extend(_describe(error))
    return problems


def _describe(error: ValidationError) -> list[str]:
    where = _where(error.absolute_path)
    if error.validator == "anyOf" and is_ref_branches(error.validator_value):
        # An argument that may also be a step reference: report the form the value meant.
        meant = 1 if is_ref(error.instance) else 0
        return [
            problem
            for sub in error.context or ()
            if sub.relative_schema_path and sub.relative_schema_path[0] == meant
            for problem in _describe(sub)
        ]
    if error.validator in ("anyOf", "oneOf"):
        chosen = _chosen_branch(error)
        if chosen is not None:
            return chosen
        return [f"{where}: {_no_branch_matches(error)}"]
    return [f"{where}: {_message(error)}"]


def _chosen_branch(error: ValidationError) -> list[str] | None:
    """For a step failing every tool branch: the errors of the branch it named, or unknown tool."""
    branches = error.validator_value
    instance = error.instance
    if not isinstance(branches, list) or not isinstance(instance, Mapping):
        return None
    tools = [_branch_tool(b) for b in branches]
    if not tools or None in tools:
        return None
    name = instance.get("tool_name")
    where = _where(error.absolute_path)
    if not isinstance(name, str):
        return [f"{where}: needs a 'tool_name', one of: {', '.join(map(str, tools))}"]
    if name not in tools:
        return [
            f"{where}.tool_name: unknown tool {name!r}; available: {', '.join(map(str, tools))}"
        ]
    index = tools.index(name)
    problems: list[str] = []
    for sub in error.context or ():
        if sub.relative_schema_path and sub.relative_schema_path[0] == index:
            problems.extend(_describe(sub))
    return problems


def _branch_tool(branch: object) -> str | None:
    if not isinstance(branch, Mapping):
        return None
    tool_name = branch.get("properties", {}).get("tool_name", {})
    const = tool_name.get("const") if isinstance(tool_name, Mapping) else None
    return const if isinstance(const, str) else None


def _no_branch_matches(error: ValidationError) -> str:
    context = list(error.context or ())
    # The usual case, an Optional[...] field given the wrong type: say which types would do.
    if context and all(sub.validator == "type" and not sub.relative_path for sub in context):
        wanted = _join_types(sub.validator_value for sub in context)
        return f"expected {wanted}, got {_json_type(error.instance)} {_short(error.instance)}"
    # A branch of another type than the value is the least likely one the value meant.
    same_type = [sub for sub in context if sub.validator != "type" or sub.relative_path]
    best = best_match(same_type or context)
    if best is None:
        # No branch failed: a oneOf whose value fits more than one branch.
        return _shorten(error.message, 200)
    inner = _where(best.relative_path, root="")
    return f"matches none of the allowed forms; closest: {inner + ': ' if inner else ''}" + (
        _message(best)
    )


def _message(error: ValidationError) -> str:
    # jsonschema types these as possibly "unset"; an error from iter_errors always has them.
    kind = error.validator
    expected: Any = error.validator_value
    instance: Any = error.instance
    if kind == "required":
        missing = [k for k in expected if isinstance(instance, Mapping) and k not in instance]
        return f"missing required key(s) {', '.join(map(repr, missing))}"
    if kind == "additionalProperties" and isinstance(instance, Mapping):
        allowed = list(
            error.schema.get("properties", {}) if isinstance(error.schema, Mapping) else []
        )
        extra = [k for k in instance if k not in allowed]
        keys = ", ".join(map(repr, extra))
        return f"unexpected key(s) {keys} (allowed: {', '.join(allowed) or 'none'})"
    if kind == "maxLength":
        return f"text of {len(instance)} characters; at most {expected} allowed"
    if kind == "maxItems":
        if expected == 0:
            return f"has {len(instance)} item(s) but must be empty"
        return f"has {len(instance)} items; at most {expected} allowed"
    if kind == "type":
        return f"expected {_join_types([expected])}, got {_json_type(instance)} {_short(instance)}"
    if kind == "const":
        return f"must be {_short(expected)}, got {_short(instance)}"
    if kind == "enum":
        return f"must be one of {', '.join(_short(v) for v in expected)}, got {_short(instance)}"
    return _shorten(error.message, 200)


def _where(path: Iterable[str | int], *, root: str = "plan") -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or root


def _join_types(values: Iterable[object]) -> str:
    names: list[str] = []
    for value in values:
        for name in value if isinstance(value, list) else [value]:
            if str(name) not in names:
                names.append(str(name))
    return " or ".join(names)


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value: object, limit: int = 60) -> str:
    return _shorten(json.dumps(value, ensure_ascii=False, default=str), limit)


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
