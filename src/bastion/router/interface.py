"""The Tool Router's contract: `ToolSpec` (a registered tool), `ToolContext`, and `ToolRouter`.

A tool is a typed Python callable, sync or async. Its args schema comes from its signature
(pydantic), its description from its docstring; it declares the permissions it needs, a timeout,
whether it has side effects, whether it is idempotent, a fallback tool and a price per call. An
unknown tool or args that fail the schema are planning errors (`UnknownTool`, `InvalidToolArgs`),
never crashes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

from pydantic import BaseModel, TypeAdapter, ValidationError

from bastion.errors import InvalidToolArgs
from bastion.messages import JsonObject, Principal

SandboxTier = Literal["inline", "process", "os"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """Handed to a tool that declares a parameter of this type (it is left out of the schema)."""

    run_id: str
    step_id: int
    attempt: int
    principal: Principal
    #: Stable across retries and restarts of the same step: a tool with side effects keys on it.
    idempotency_key: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolSpec:
    """A registered tool: the callable and everything the runtime must know about it."""

    name: str
    description: str
    fn: Callable[..., Any]
    args_model: type[BaseModel]
    #: JSON schema of the args (``additionalProperties: false``), as the planner shows the model.
    args_schema: Mapping[str, Any]
    is_async: bool
    #: The name of the parameter that receives a `ToolContext`, if the tool takes one.
    context_param: str | None = None
    #: Validates (and serialises) the return value, from the return annotation; None if unannotated.
    return_adapter: TypeAdapter[Any] | None = None
    return_schema: Mapping[str, Any] | None = None
    required_permissions: frozenset[str] = frozenset()
    timeout_s: float | None = None
    side_effects: bool = False
    idempotent: bool = False
    fallback: str | None = None
    cost_usd: Decimal = Decimal(0)
    sandbox: SandboxTier = "inline"
    tags: frozenset[str] = field(default_factory=frozenset)

    def validate_args(self, args: JsonObject) -> dict[str, Any]:
        """Check `args` against the schema; return them as the tool's keyword arguments.

        Raises:
            InvalidToolArgs: naming each failing field, in words the planner can act on.
        """
        try:
            model = self.args_model.model_validate(dict(args))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or '(args)'}: {err['msg']}"
                for err in exc.errors()
            )
            raise InvalidToolArgs(
                f"invalid args for tool {self.name!r}: {problems}", tool_name=self.name
            ) from exc
        return {name: getattr(model, name) for name in type(model).model_fields}


class ToolRouter(Protocol):
    """Maps tool names to registered tools. Lookups never run a tool."""

    def describe_all(self) -> tuple[ToolSpec, ...]:
        """Every registered tool, in registration order."""
        ...

    def get(self, name: str) -> ToolSpec:
        """The tool called `name`.

        Raises:
            UnknownTool: no tool has that name.
        """
        ...
