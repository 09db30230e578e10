"""An MCP server's tools as `ToolSpec`s, and their results as JSON data.

A mounted tool is a `McpToolSpec`: a `ToolSpec` whose args are checked against the JSON schema the
server lists (there is no Python signature to read) and whose function forwards the call to the
server. Its policies (scopes, side effects, idempotency, timeout) come from the configuration,
never from the server's own annotations (``readOnlyHint`` and the like are the server's claims, not
the operator's decision). Its ``return_schema`` is the server's ``outputSchema``, which step
references are checked against.

A result becomes: the server's ``structuredContent`` when it sent one; else the text of its content
(parsed as JSON when it is JSON; a list when there are several blocks). A result marked
``isError`` raises `McpToolError`, which the sandbox turns into a ``tool_error`` outcome.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import mcp_types
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from pydantic import BaseModel, ConfigDict

from bastion.errors import ConfigError, InvalidToolArgs, ToolError
from bastion.messages import JsonObject
from bastion.planner.plan_schema import build_plan_schema
from bastion.router.interface import ToolSpec
from bastion.router.registry import TOOL_NAME
from bastion.settings import McpServerSettings

logger = logging.getLogger(__name__)

#: Sends one call to the server: the tool's name there and its args; returns the raw result.
CallFn = Callable[[str, dict[str, Any]], Awaitable[mcp_types.CallToolResult]]


class McpToolError(ToolError):
    """The server ran the tool and reported an error (``isError``)."""


class _ServerArgs(BaseModel):
    # Never used to validate (McpToolSpec checks the server's JSON schema): `ToolSpec` needs one.
    model_config = ConfigDict(extra="allow")


@dataclass(frozen=True, slots=True, kw_only=True)
class McpToolSpec(ToolSpec):
    """A tool of a mounted MCP server."""

    #: The server's prefix and the tool's name on the server.
    server: str
    remote_name: str

    def validate_args(self, args: JsonObject) -> dict[str, Any]:
        """Check `args` against the server's input schema; return them unchanged.

        Raises:
            InvalidToolArgs: naming each failing field.
        """
        validator = Draft202012Validator(dict(self.args_schema))
        errors = sorted(validator.iter_errors(dict(args)), key=lambda e: list(e.absolute_path))
        if errors:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error.absolute_path) or '(args)'}: {error.message}"
                for error in errors
            )
            raise InvalidToolArgs(
                f"invalid args for tool {self.name!r}: {problems}", tool_name=self.name
            )
        return dict(args)


def make_spec(tool: mcp_types.Tool, config: McpServerSettings, call: CallFn) -> McpToolSpec:
    """A `ToolSpec` for one listed tool, with the configured policies.

    Raises:
        ConfigError: the tool's name or input schema cannot be used (the caller skips it).
    """
    name = f"{config.prefix}.{tool.name}"
    if not TOOL_NAME.match(name):
        raise ConfigError(f"MCP tool {name!r}: the name is not usable as a tool name")
    schema: dict[str, Any] = dict(tool.input_schema or {})
    schema.setdefault("type", "object")
    schema.setdefault("properties", {})
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ConfigError(f"MCP tool {name!r}: its input schema is invalid: {exc.message}") from exc
    policy = config.tools.get(tool.name)
    remote = tool.name

    async def forward(**kwargs: Any) -> Any:
        return result_value(await call(remote, kwargs), tool_name=name)

    spec = McpToolSpec(
        name=name,
        description=(tool.description or tool.title or f"The {tool.name} tool.").strip(),
        fn=forward,
        args_model=_ServerArgs,
        args_schema=schema,
        is_async=True,
        return_schema=dict(tool.output_schema) if tool.output_schema else None,
        required_permissions=frozenset(
            policy.scopes if policy and policy.scopes is not None else config.scopes
        ),
        timeout_s=policy.timeout_s if policy and policy.timeout_s else config.timeout_s,
        side_effects=_pick(policy.side_effects if policy else None, config.side_effects),
        idempotent=_pick(policy.idempotent if policy else None, config.idempotent),
        tags=frozenset({"mcp", f"mcp:{config.prefix}"}),
        server=config.prefix,
        remote_name=tool.name,
    )
    build_plan_schema([spec], max_steps=1)  # raises ConfigError for a schema the planner can't use
    return spec


def _pick(override: bool | None, default: bool) -> bool:
    return default if override is None else override


def result_value(result: mcp_types.CallToolResult, *, tool_name: str) -> Any:
    """The JSON value of a call's result.

    Raises:
        McpToolError: the server marked the result as an error (its text is the message).
    """
    if result.is_error:
        text = " ".join(_texts(result.content)) or "no details given"
        raise McpToolError(f"MCP tool {tool_name!r} reported an error: {text}")
    if result.structured_content is not None:
        return result.structured_content
    values = [_block_value(block) for block in result.content]
    if len(values) == 1:
        return values[0]
    return values


def _texts(blocks: list[Any]) -> list[str]:
    return [block.text for block in blocks if isinstance(block, mcp_types.TextContent)]


def _block_value(block: Any) -> Any:
    if isinstance(block, mcp_types.TextContent):
        try:
            return json.loads(block.text)
        except ValueError:
            return block.text
    # Images, audio, resources: described, not inlined (a planner cannot use the bytes).
    described: dict[str, Any] = {"type": getattr(block, "type", type(block).__name__)}
    for key in ("mime_type", "uri", "name"):
        value = getattr(block, key, None)
        if isinstance(value, str):
            described[key] = value
    uri = getattr(getattr(block, "resource", None), "uri", None)
    if uri is not None:
        described["uri"] = str(uri)
    return described


def listed_specs(
    tools: list[mcp_types.Tool], config: McpServerSettings, call: CallFn
) -> dict[str, McpToolSpec]:
    """The usable tools of a listing, by mounted name; unusable ones are logged and skipped."""
    specs: dict[str, McpToolSpec] = {}
    wanted: Mapping[str, object] | None = (
        dict.fromkeys(config.include) if config.include is not None else None
    )
    for tool in tools:
        if wanted is not None and tool.name not in wanted:
            continue
        try:
            spec = make_spec(tool, config, call)
        except ConfigError as exc:
            logger.warning("MCP server %r: tool %r not mounted: %s", config.prefix, tool.name, exc)
            continue
        specs[spec.name] = spec
    return specs
