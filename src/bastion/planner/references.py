"""Step references: a step's argument taken from an earlier step's result.

The syntax, in a plan's ``tool_args``, replaces a whole top-level argument value::

    {"order_id": {"$from": "steps[0].result.order_id"}}

``steps[N]`` names the step whose ``step_id`` is N (the first plan numbers its steps from 0; a
replan's steps continue after the history, whose ids the planner is shown), ``.result`` its
result, then any number of ``.field`` or ``[index]`` parts into it. The key is ``$from`` rather
than ``$ref``: the plan schema embeds the reference's shape, and ``$ref`` is a JSON Schema keyword
that grammar compilers (llama.cpp's among them) read as a schema reference wherever it appears.
Only top-level arguments may be references (nested values are the tool's own data), and the whole
value is replaced (no string interpolation: an id stays an integer).

A reference is checked three times, each failure being a planning error the planner can act on:

* when the model answers (`check_plan`, through `bastion.planner.repair`): the syntax, that the
  step is earlier and did not fail, and the path against the earlier tool's declared return schema
  (or, for a step already run, its actual result), including a type clash with the argument;
* when the flow vets a plan (the same check, for plans from any planner);
* right before the call (`resolve_args`): the value is read from the result; the resolved args are
  what the gate authorizes and the sandbox runs. A path the schema could not rule out (a result
  typed ``dict[str, Any]``) can still be missing here: the step fails with ``invalid_args`` and the
  Recovery Handler replans with that message.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bastion.messages import JsonObject, PlanStep, StepRecord, StepStatus
from bastion.router.interface import ToolSpec

REF_KEY = "$from"
#: Marks the reference branch added to each argument of the plan schema (read by its messages).
REF_TITLE = "step reference"
REF_MAX_LENGTH = 200
_PATH = re.compile(r"^steps\[(\d+)\]\.result((?:\.[A-Za-z_][A-Za-z0-9_-]*|\[\d+\])*)$")
_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]")
_EXAMPLE = f'{{"{REF_KEY}": "steps[0].result.field"}}'
_UNKNOWN = object()


class BadReference(ValueError):
    """A reference that cannot be resolved; the message says why, in words for the planner."""


@dataclass(frozen=True, slots=True)
class StepRef:
    """A parsed reference: the step's id and the path into its result."""

    step_id: int
    path: tuple[str | int, ...]
    text: str


def ref_schema() -> dict[str, Any]:
    """The JSON schema of one reference value, as the plan schema allows it for any argument."""
    return {
        "title": REF_TITLE,
        "type": "object",
        "properties": {REF_KEY: {"type": "string", "maxLength": REF_MAX_LENGTH}},
        "required": [REF_KEY],
        "additionalProperties": False,
    }


def allow_refs(args: dict[str, Any]) -> dict[str, Any]:
    """`args` (a bounded args schema) with every top-level property also accepting a reference."""
    properties = args.get("properties")
    if not isinstance(properties, Mapping):
        return args
    args["properties"] = {name: {"anyOf": [sub, ref_schema()]} for name, sub in properties.items()}
    return args


def is_ref_branches(branches: object) -> bool:
    """Whether an ``anyOf`` is an argument's own schema plus the reference branch."""
    return (
        isinstance(branches, list)
        and len(branches) == 2
        and isinstance(branches[1], Mapping)
        and branches[1].get("title") == REF_TITLE
    )


def is_ref(value: object) -> bool:
    """Whether an argument value is a reference (an object whose only key is ``$from``)."""
    return isinstance(value, Mapping) and set(value) == {REF_KEY}


def has_refs(args: Mapping[str, Any]) -> bool:
    """Whether any top-level argument is a reference."""
    return any(is_ref(value) for value in args.values())


def without_refs(args: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments whose values are known before the run (the gate's plan-stage view)."""
    return {name: value for name, value in args.items() if not is_ref(value)}


def parse(value: object) -> StepRef:
    """Read a reference value.

    Raises:
        BadReference: it is not ``{"$from": "steps[N].result..."}``.
    """
    text = value.get(REF_KEY) if isinstance(value, Mapping) else None
    match = _PATH.match(text) if isinstance(text, str) else None
    if match is None or not isinstance(text, str):
        raise BadReference(
            f"{_short(text)} is not a valid reference; write {_EXAMPLE} "
            "(steps[N] is the earlier step's step_id)"
        )
    path: list[str | int] = []
    for name, index in _PART.findall(match.group(2)):
        path.append(name if name else int(index))
    return StepRef(step_id=int(match.group(1)), path=tuple(path), text=text)


# -- checking a plan ---------------------------------------------------------------------------


def check_plan(
    steps: Sequence[PlanStep],
    *,
    tool: Callable[[str], ToolSpec | None],
    history: Iterable[StepRecord] = (),
) -> dict[int, list[str]]:
    """Every bad reference in a plan, by the index of the step holding it.

    Args:
        steps: The plan's steps, in order.
        tool: Looks a tool up by name (None when unknown: that step's refs are not checked).
        history: The steps run so far in this run (a replan's steps may refer to them).

    Returns:
        ``{index: [problem, ...]}``; empty when every reference holds.
    """
    # An earlier step is a known value (already run), or a return schema (planned before it).
    done: dict[int, StepRecord] = {record.step.step_id: record for record in history}
    planned: dict[int, ToolSpec | None] = {}
    problems: dict[int, list[str]] = {}
    for index, step in enumerate(steps):
        spec = tool(step.tool_name)
        for name, value in step.tool_args.items():
            if not is_ref(value):
                continue
            problem = _check_one(name, value, spec, done=done, planned=planned)
            if problem is not None:
                problems.setdefault(index, []).append(f"steps[{index}].tool_args.{name}: {problem}")
        planned[step.step_id] = spec
    return problems


def _check_one(
    name: str,
    value: object,
    spec: ToolSpec | None,
    *,
    done: Mapping[int, StepRecord],
    planned: Mapping[int, ToolSpec | None],
) -> str | None:
    try:
        ref = parse(value)
    except BadReference as exc:
        return str(exc)
    target = _arg_schema(spec, name) if spec is not None else None
    record = done.get(ref.step_id)
    if record is not None:
        if record.status is not StepStatus.SUCCESS or record.outcome is None:
            return (
                f"{ref.text!r} refers to step {ref.step_id}, which did not succeed "
                f"({record.status.value}); its result is not available"
            )
        try:
            found = read_path(record.outcome.value, ref)
        except BadReference as exc:
            return str(exc)
        return _clash(ref, _value_types(found), target, name)
    if ref.step_id not in planned:
        earlier = sorted({*done, *planned})
        listed = ", ".join(map(str, earlier)) if earlier else "none"
        return (
            f"{ref.text!r} refers to step {ref.step_id}, which is not an earlier step "
            f"(earlier step ids: {listed})"
        )
    source = planned[ref.step_id]
    if source is None or source.return_schema is None:
        return None  # nothing declared: only the call can tell
    try:
        schema = schema_at(source.return_schema, ref, tool_name=source.name)
    except BadReference as exc:
        return str(exc)
    return _clash(ref, _schema_types(schema, source.return_schema), target, name)


def _arg_schema(spec: ToolSpec, name: str) -> Mapping[str, Any] | None:
    from bastion.planner.plan_schema import args_root  # a cycle: plan_schema imports us

    root = args_root(spec.args_schema)
    sub = (root.get("properties") or {}).get(name)
    return _deref(sub, root) if isinstance(sub, Mapping) else None


def _clash(
    ref: StepRef, found: set[str] | None, target: Mapping[str, Any] | None, name: str
) -> str | None:
    wanted = _schema_types(target, target) if target is not None else None
    if not found or not wanted or _compatible(found, wanted):
        return None
    return (
        f"{ref.text!r} is {' or '.join(sorted(found))}, but argument {name!r} needs "
        f"{' or '.join(sorted(wanted))}"
    )


def _compatible(found: set[str], wanted: set[str]) -> bool:
    widened = set(wanted)
    if "number" in widened:
        widened.add("integer")
    return bool(found & widened)


# -- schemas -----------------------------------------------------------------------------------


def schema_at(schema: Mapping[str, Any], ref: StepRef, *, tool_name: str) -> Mapping[str, Any]:
    """The part of a return schema that `ref`'s path points at (``{}`` where it cannot tell).

    Raises:
        BadReference: the schema rules the path out (a field it does not declare, an index into
            something that is not a list).
    """
    node: Mapping[str, Any] = _deref(schema, schema)
    walked = f"steps[{ref.step_id}].result"
    for part in ref.path:
        nxt = _step_into(node, part, schema)
        if nxt is None:
            raise BadReference(_missing(ref, walked, part, node, schema, tool_name))
        node = nxt
        walked += f".{part}" if isinstance(part, str) else f"[{part}]"
    return node


def _step_into(
    node: Mapping[str, Any], part: str | int, root: Mapping[str, Any]
) -> Mapping[str, Any] | None:
    branches = node.get("anyOf") or node.get("oneOf")
    if isinstance(branches, list):
        for branch in branches:
            found = _step_into(_deref(branch, root), part, root)
            if found is not None:
                return found
        return None
    types = _declared(node)
    if isinstance(part, int):
        if types and "array" not in types:
            return None
        items = node.get("items")
        return _deref(items, root) if isinstance(items, Mapping) else {}
    if types and "object" not in types:
        return None
    properties = node.get("properties")
    if isinstance(properties, Mapping) and part in properties:
        return _deref(properties[part], root)
    extra = node.get("additionalProperties")
    if isinstance(extra, Mapping):
        return _deref(extra, root)
    if not isinstance(properties, Mapping) or extra is True:
        return {}  # free-form: the call will tell
    return None


def _missing(
    ref: StepRef,
    walked: str,
    part: str | int,
    node: Mapping[str, Any],
    root: Mapping[str, Any],
    tool_name: str,
) -> str:
    fields = _fields(node, root)
    if isinstance(part, int):
        what = f"{walked} is not a list"
    elif fields:
        what = f"{walked} has no field {part!r} (its fields: {', '.join(fields)})"
    else:
        what = f"{walked} is not an object with fields"
    return f"{ref.text!r} does not match what {tool_name!r} returns: {what}"


def _fields(node: Mapping[str, Any], root: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    for branch in node.get("anyOf") or node.get("oneOf") or [node]:
        properties = _deref(branch, root).get("properties")
        if isinstance(properties, Mapping):
            names.extend(n for n in properties if n not in names)
    return names


def _deref(node: object, root: Mapping[str, Any]) -> Mapping[str, Any]:
    if not isinstance(node, Mapping):
        return {}
    seen = 0
    while isinstance(node.get("$ref"), str) and seen < 20:
        pointer = str(node["$ref"])
        target: object = None
        for key in ("$defs", "definitions"):
            head = f"#/{key}/"
            if pointer.startswith(head):
                target = (root.get(key) or {}).get(pointer.removeprefix(head))
        if not isinstance(target, Mapping):
            return {}
        node, seen = target, seen + 1
    return node


def _declared(node: Mapping[str, Any]) -> set[str]:
    declared = node.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    return set()


def _schema_types(node: Mapping[str, Any] | None, root: Mapping[str, Any] | None) -> set[str]:
    if node is None or root is None:
        return set()
    node = _deref(node, root)
    branches = node.get("anyOf") or node.get("oneOf")
    if isinstance(branches, list):
        types: set[str] = set()
        for branch in branches:
            sub = _schema_types(_deref(branch, root), root)
            if not sub:
                return set()  # one branch accepts anything: no clash can be shown
            types |= sub
        return types
    if "const" in node:
        return _value_types(node["const"])
    return _declared(node)


def _value_types(value: object) -> set[str]:
    if value is None:
        return {"null"}
    if isinstance(value, bool):
        return {"boolean"}
    if isinstance(value, int):
        return {"integer"}
    if isinstance(value, float):
        return {"number"}
    if isinstance(value, str):
        return {"string"}
    if isinstance(value, list):
        return {"array"}
    return {"object"}


# -- resolving ---------------------------------------------------------------------------------


def read_path(result: object, ref: StepRef) -> Any:
    """The value `ref` points at inside `result`.

    Raises:
        BadReference: a field is missing, an index is out of range or a part has the wrong type.
    """
    value: Any = result
    walked = f"steps[{ref.step_id}].result"
    for part in ref.path:
        if isinstance(part, int):
            if not isinstance(value, list) or part >= len(value):
                size = f"a list of {len(value)}" if isinstance(value, list) else _kind(value)
                raise BadReference(f"{ref.text!r}: {walked} is {size}, so [{part}] does not exist")
            value = value[part]
        else:
            if not isinstance(value, Mapping) or part not in value:
                keys = (
                    f" (its fields: {', '.join(map(str, list(value)[:20]))})"
                    if isinstance(value, Mapping)
                    else f" ({_kind(value)})"
                )
                raise BadReference(f"{ref.text!r}: {walked} has no field {part!r}{keys}")
            value = value[part]
        walked += f".{part}" if isinstance(part, str) else f"[{part}]"
    return value


def resolve_args(args: JsonObject, records: Iterable[StepRecord]) -> dict[str, Any]:
    """`args` with every reference replaced by the value it points at.

    Args:
        args: A step's args, possibly holding references.
        records: The steps run so far.

    Raises:
        BadReference: a reference is malformed, names a step that has not succeeded, or a path
            that its result does not have.
    """
    if not has_refs(args):
        return dict(args)
    results = {
        r.step.step_id: r.outcome.value
        for r in records
        if r.status is StepStatus.SUCCESS and r.outcome is not None
    }
    resolved: dict[str, Any] = {}
    for name, value in args.items():
        if not is_ref(value):
            resolved[name] = value
            continue
        ref = parse(value)
        if ref.step_id not in results:
            raise BadReference(
                f"argument {name!r}: {ref.text!r} refers to step {ref.step_id}, which has no "
                "successful result in this run"
            )
        try:
            resolved[name] = read_path(results[ref.step_id], ref)
        except BadReference as exc:
            raise BadReference(f"argument {name!r}: {exc}") from None
    return resolved


def _kind(value: object) -> str:
    return f"a {next(iter(_value_types(value)))}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:79] + "…"


def resolve_step(step: PlanStep, records: Iterable[StepRecord]) -> PlanStep:
    """`step` with its references resolved (the same step when it has none).

    Raises:
        BadReference: as `resolve_args`, the message naming the step.
    """
    if not has_refs(step.tool_args):
        return step
    try:
        args = resolve_args(step.tool_args, records)
    except BadReference as exc:
        raise BadReference(f"step {step.step_id} ({step.tool_name}): {exc}") from None
    return dataclasses.replace(step, tool_args=args)
