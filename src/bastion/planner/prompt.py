"""The planner's messages: a short system prompt, then one user message ending with the request.

The system prompt holds the agent's role (the app's ``system_prompt``), the caller's tools (one
line each, with their arguments) and the rules of the answer. It grows with the caller's tools only:
the exact argument shapes travel in the request's JSON schema, so the prompt carries a signature per
tool, not its schema. The user message holds the session's recent turns, on a replan the steps run
so far (one compact JSON line each, cut to `STEP_MAX_CHARS`) and the reason for the replan, and last
the request itself, verbatim, so the model answers the request and not an earlier turn.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from bastion.messages import StepRecord
from bastion.models.interface import ChatMessage
from bastion.planner.interface import PlanningContext
from bastion.planner.plan_schema import args_root
from bastion.router.interface import ToolSpec

DEFAULT_SYSTEM_PROMPT = "You are an assistant that handles a user's request by planning tool calls."
#: A step of the history, as shown on a replan, is cut to about this many characters.
STEP_MAX_CHARS = 1000
FEEDBACK_MAX_CHARS = 1000
TOOL_DESCRIPTION_MAX_CHARS = 300
ARG_DESCRIPTION_MAX_CHARS = 120

REFS_RULE = (
    '- To pass an earlier step\'s result as an argument, write {"$from": '
    '"steps[N].result.field"} as its value (N is that step\'s step_id, counted from 0).'
)
_SHAPE = (
    '{"reasoning": "<why these steps, briefly>", "steps": [{"description": "<what this step '
    'does>", "tool_name": "<one of the tools>", "tool_args": {<that tool\'s arguments>}}]}'
)


def build_messages(
    context: PlanningContext,
    *,
    max_steps: int,
    system_prompt: str | None = None,
    step_refs: bool = False,
) -> tuple[ChatMessage, ...]:
    """The system prompt and the user message for one (re)plan.

    Args:
        context: The request, the caller's tools, memory and (on a replan) the history.
        max_steps: The most steps a plan may have (the schema enforces it; the prompt says it).
        system_prompt: The agent's role, from the app; a generic one when None.
        step_refs: Whether to explain step references (the schema then allows them).

    Returns:
        ``(system, user)``; the user message contains ``context.request.message`` verbatim, last.
    """
    return (
        ChatMessage(
            role="system",
            content=system_text(
                context.tools, max_steps=max_steps, role=system_prompt, step_refs=step_refs
            ),
        ),
        ChatMessage(role="user", content=user_text(context)),
    )


def system_text(
    tools: Sequence[ToolSpec],
    *,
    max_steps: int,
    role: str | None = None,
    step_refs: bool = False,
) -> str:
    """The agent's role, the tools and the rules of the answer (and step references, if on)."""
    if tools:
        listing = "Tools:\n" + "\n".join(tool_line(spec) for spec in tools)
        limit = f'At most {max_steps} steps. If no tool is needed, give an empty "steps" list.'
    else:
        listing = "Tools: none."
        limit = 'No tool is available, so "steps" must be an empty list.'
    rules = "\n".join(
        [
            "Answer with one JSON object and nothing else, in this shape:",
            _SHAPE,
            "Rules:",
            "- Use only the tools listed, with exactly their arguments.",
            "- Take ids and other values only from the user's words or from earlier results; "
            "never invent them.",
            f"- {limit}",
            *([REFS_RULE] if step_refs and tools else []),
        ]
    )
    return f"{(role or DEFAULT_SYSTEM_PROMPT).strip()}\n\n{listing}\n\n{rules}"


def tool_line(spec: ToolSpec) -> str:
    """``- name(arg: type, optional?: type): description``, then one line per described arg."""
    schema = args_root(spec.args_schema)
    properties: Mapping[str, Any] = schema.get("properties") or {}
    args = _fields(schema)
    lines = [f"- {spec.name}({args}): {_squash(spec.description, TOOL_DESCRIPTION_MAX_CHARS)}"]
    for name, sub in properties.items():
        described = sub.get("description") if isinstance(sub, Mapping) else None
        if isinstance(described, str) and described.strip():
            lines.append(f"    {name}: {_squash(described, ARG_DESCRIPTION_MAX_CHARS)}")
    return "\n".join(lines)


def type_label(schema: object) -> str:
    """A short name for a JSON schema's type: ``string``, ``integer|null``, ``list[string]``."""
    if not isinstance(schema, Mapping):
        return "any"
    if isinstance(schema.get("$ref"), str):
        return str(schema["$ref"]).rsplit("/", 1)[-1]
    if "const" in schema:
        return json.dumps(schema["const"])
    if isinstance(schema.get("enum"), list):
        return "|".join(json.dumps(v) for v in schema["enum"])
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            return "|".join(type_label(sub) for sub in schema[key])
    if isinstance(schema.get("properties"), Mapping):
        return f"{{{_fields(schema)}}}"
    declared = schema.get("type")
    names = declared if isinstance(declared, list) else [declared] if declared else []
    if not names:
        return "any"
    return "|".join(
        f"list[{type_label(schema['items'])}]" if name == "array" and "items" in schema else name
        for name in map(str, names)
    )


def _fields(schema: Mapping[str, Any]) -> str:
    """``name: type, optional?: type`` for an object schema's properties."""
    required = set(schema.get("required") or ())
    return ", ".join(
        f"{name}{'' if name in required else '?'}: {type_label(sub)}"
        for name, sub in (schema.get("properties") or {}).items()
    )


def user_text(context: PlanningContext) -> str:
    """Facts, summary, recent turns, a replan's history and feedback; last the request, verbatim."""
    parts: list[str] = []
    memory = context.memory
    if memory.facts:
        facts = "\n".join(f"- {fact.content}" for fact in memory.facts)
        parts.append(f"What we know about this user (from earlier conversations):\n{facts}")
    if memory.summary:
        parts.append(f"Summary of the earlier conversation:\n{memory.summary}")
    if memory.turns or memory.omitted_turns:
        lines = [f"{turn.role}: {turn.content}" for turn in memory.turns]
        left_out = memory.omitted_turns - (memory.summarised_turns if memory.summary else 0)
        if left_out > 0:
            lines.insert(0, f"({left_out} earlier turn(s) left out)")
        parts.append("Conversation so far, oldest first:\n" + "\n".join(lines))
    if context.history:
        lines = [step_line(record) for record in context.history]
        parts.append("Steps already run, one JSON object per line:\n" + "\n".join(lines))
    if context.feedback:
        feedback = _cut(context.feedback, FEEDBACK_MAX_CHARS)
        parts.append(f"Why a new plan is needed: {feedback}")
    if context.history or context.feedback:
        parts.append("Plan only the remaining steps; do not repeat steps that succeeded.")
    parts.append(f"Request:\n{context.request.message}")
    return "\n\n".join(parts)


def step_line(record: StepRecord) -> str:
    """One step of the history as compact JSON, its result or error cut to fit `STEP_MAX_CHARS`."""
    step = record.step
    entry: dict[str, Any] = {
        "step_id": step.step_id,
        "description": step.description,
        "tool_name": record.tool_name or step.tool_name,
        "tool_args": step.tool_args,
        "status": record.status.value,
    }
    outcome, verdict = record.outcome, record.verdict
    if outcome is not None and outcome.ok:
        entry["result"] = outcome.value
        if verdict is not None and not verdict.passed:
            entry["rejected"] = verdict.reason
    elif outcome is not None:
        entry["error"] = outcome.error or str(outcome.error_kind)
    line = _dump(entry)
    for key in ("result", "error", "rejected"):
        if key not in entry:
            continue
        text = entry[key] if isinstance(entry[key], str) else _dump(entry[key])
        keep = len(text)
        # Escaping makes the dumped text longer than the text: shrink until the line fits.
        while len(line) > STEP_MAX_CHARS and keep > 40:
            keep = max(40, keep - (len(line) - STEP_MAX_CHARS) - 40)
            entry[key] = _cut(text, keep)
            line = _dump(entry)
    return _cut(line, STEP_MAX_CHARS)


def _dump(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text) - limit} more characters cut)"


def _squash(text: str, limit: int) -> str:
    # Docstrings arrive with line breaks and indentation: one line reads better and is shorter.
    return _cut(" ".join(text.split()), limit)
