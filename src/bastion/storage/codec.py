"""JSON encoding of our frozen dataclasses for JSON columns, and decoding them back exactly.

One pydantic `TypeAdapter` per persisted type, straight on the dataclasses in `bastion.messages`
(no parallel set of models to keep in step): `Decimal`s become strings and come back as the same
`Decimal`, enums their values, datetimes ISO 8601 with their offset; decoding runs each
dataclass's own ``__post_init__`` checks, so a corrupted row fails loudly instead of yielding an
impossible value.

Free-form JSON (`Json`, `JsonObject`: tool args and results, event data) is encoded the same way,
so a `Decimal` or a `datetime` inside a tool's result is stored as its string rather than crashing
the write; it comes back as that string, since nothing records what type it was.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from bastion.messages import AgentPlan, JsonObject, StepRecord

PLAN_ADAPTER: TypeAdapter[AgentPlan] = TypeAdapter(AgentPlan)
STEP_RECORD_ADAPTER: TypeAdapter[StepRecord] = TypeAdapter(StepRecord)
JSON_OBJECT_ADAPTER: TypeAdapter[dict[str, Any]] = TypeAdapter(dict[str, Any])


def encode_plan(plan: AgentPlan) -> dict[str, Any]:
    """`plan` as a JSON-ready dict."""
    return PLAN_ADAPTER.dump_python(plan, mode="json")  # type: ignore[no-any-return]


def decode_plan(data: Any) -> AgentPlan:
    """The `AgentPlan` that `encode_plan` encoded as `data`."""
    return PLAN_ADAPTER.validate_python(data)


def encode_step_record(record: StepRecord) -> dict[str, Any]:
    """`record` (with its step, outcome and verdict) as a JSON-ready dict."""
    return STEP_RECORD_ADAPTER.dump_python(record, mode="json")  # type: ignore[no-any-return]


def decode_step_record(data: Any) -> StepRecord:
    """The `StepRecord` that `encode_step_record` encoded as `data`."""
    return STEP_RECORD_ADAPTER.validate_python(data)


def encode_json_object(data: JsonObject) -> dict[str, Any]:
    """A free-form mapping as a JSON-ready dict (non-JSON values become their JSON form)."""
    return JSON_OBJECT_ADAPTER.dump_python(dict(data), mode="json")  # type: ignore[no-any-return]
