"""JSON for everything a durable run stores: inputs, results and each step's output.

Workflow inputs and results are stored by DBOS, step outputs by the journal
(`bastion.durable.journal`).

DBOS's default serializer is pickle: a code change can make old checkpoints unreadable, and a
pickle is code, not data. Bastion stores JSON only (`JsonSerializer`), so each value is encoded
here first, with one pydantic `TypeAdapter` per type on the dataclasses of `bastion.messages` (no
parallel models). A step never raises through its checkpoint: an error it met is encoded as data
(`encode_error`) and raised again, as the same class, by the wrapper that ran it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from dbos._serialization import Serializer
from pydantic import TypeAdapter

from bastion import errors
from bastion.gate.interface import Decision
from bastion.messages import (
    AgentRequest,
    AgentResponse,
    Principal,
    RecoveryAction,
    ToolOutcome,
)
from bastion.models.interface import ChatResponse

REQUEST: TypeAdapter[AgentRequest] = TypeAdapter(AgentRequest)
RESPONSE: TypeAdapter[AgentResponse] = TypeAdapter(AgentResponse)
CHAT_RESPONSE: TypeAdapter[ChatResponse] = TypeAdapter(ChatResponse)
OUTCOME: TypeAdapter[ToolOutcome] = TypeAdapter(ToolOutcome)
DECISION: TypeAdapter[Decision] = TypeAdapter(Decision)
PRINCIPAL: TypeAdapter[Principal] = TypeAdapter(Principal)
ACTION: TypeAdapter[RecoveryAction] = TypeAdapter(RecoveryAction)


def dump(adapter: TypeAdapter[Any], value: Any) -> Any:
    """`value` as JSON-ready data."""
    return adapter.dump_python(value, mode="json")


def encode_run_input(
    request: AgentRequest, deadline_at: datetime, principal: Principal | None = None
) -> dict[str, Any]:
    """The workflow's input: the request, its deadline and, if given, its principal.

    The deadline is wall-clock (restart-proof). The principal is the one the caller's API key
    belongs to, when the caller authenticated with a key; the key itself is left out:
    checkpoints are stored, and a key never is.
    """
    data = dump(REQUEST, request)
    data.pop("api_key", None)
    encoded = {"request": data, "deadline_at": deadline_at.isoformat()}
    if principal is not None:
        encoded["principal"] = dump(PRINCIPAL, principal)
    return encoded


def decode_run_input(data: dict[str, Any]) -> tuple[AgentRequest, datetime, Principal | None]:
    """The request, deadline and principal that `encode_run_input` encoded."""
    principal = data.get("principal")
    return (
        REQUEST.validate_python(data["request"]),
        datetime.fromisoformat(data["deadline_at"]),
        None if principal is None else PRINCIPAL.validate_python(principal),
    )


def encode_error(exc: errors.BastionError) -> dict[str, Any]:
    """A Bastion error as data: its class name, message and the attributes it carries."""
    data: dict[str, Any] = {"type": type(exc).__name__, "message": str(exc)}
    for attr in ("retry_after_s", "model", "tool_name", "name", "retry_at"):
        if hasattr(exc, attr):
            data[attr] = getattr(exc, attr)
    return {"error": data}


def decode_error(data: dict[str, Any]) -> errors.BastionError:
    """The error `encode_error` encoded, as its own class (a plain `BastionError` if unknown)."""
    info = data["error"]
    cls = getattr(errors, str(info.get("type")), None)
    message = str(info.get("message", ""))
    if not (isinstance(cls, type) and issubclass(cls, errors.BastionError)):
        return errors.BastionError(message)
    if cls is errors.CircuitOpen:
        return errors.CircuitOpen(str(info.get("name", "")), float(info.get("retry_at", 0.0)))
    if issubclass(cls, errors.ModelRateLimited):
        return cls(message, model=info.get("model"), retry_after_s=info.get("retry_after_s"))
    if issubclass(cls, errors.RateLimited):
        return cls(message, retry_after_s=info.get("retry_after_s"))
    if issubclass(cls, errors.ModelError):
        return cls(message, model=info.get("model"))
    if issubclass(cls, errors.ToolError):
        return cls(message, tool_name=info.get("tool_name"))
    return cls(message)


def is_error(data: Any) -> bool:
    """Whether a step's output is an encoded error rather than a value."""
    return isinstance(data, dict) and set(data) == {"error"} and isinstance(data["error"], dict)


class JsonSerializer(Serializer):
    """DBOS serializer that writes JSON and refuses anything else, so nothing is pickled."""

    def serialize(self, data: Any) -> str:
        try:
            return json.dumps(data, separators=(",", ":"), default=_refuse)
        except TypeError as exc:  # pragma: no cover - _refuse raises with the details
            raise TypeError(f"Bastion stores JSON only in DBOS: {exc}") from exc

    def deserialize(cls, serialized_data: str) -> Any:
        value = json.loads(serialized_data)
        if isinstance(value, dict) and value.keys() == {"exception", "message"}:
            # A workflow's recorded error (see `_refuse`): raised again as one, not as a dict.
            return WorkflowError(str(value["exception"]), str(value["message"]))
        return value

    def name(self) -> str:
        return "bastion_json"


class WorkflowError(errors.BastionError):
    """A workflow's error as DBOS recorded it: its class name and message (the object is gone)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _refuse(value: object) -> Any:
    if isinstance(value, BaseException):
        # DBOS records a workflow's or step's exception; Bastion's never raise through DBOS,
        # but DBOS's own (cancellation, timeouts) must still be storable.
        return {"exception": type(value).__name__, "message": str(value)}
    raise TypeError(
        f"{type(value).__name__} is not JSON: encode it with bastion.durable.codec first"
    )
