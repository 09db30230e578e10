"""Listed MCP tools as `ToolSpec`s, and call results as JSON values (no server needed)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import mcp_types
import pytest

from bastion.errors import ConfigError, InvalidToolArgs, UnknownTool
from bastion.mcp import (
    McpRouter,
    McpServer,
    McpToolError,
    McpToolSpec,
    ServerLimits,
    limited_command,
)
from bastion.mcp.tools import listed_specs, make_spec, result_value
from bastion.router.default import RegistryRouter
from bastion.router.registry import tool
from bastion.settings import McpServerSettings, load_settings

CONFIG = McpServerSettings(
    prefix="srv",
    url="http://127.0.0.1:1/mcp",
    scopes=["a"],
    tools={"write": {"scopes": ["a", "w"], "side_effects": True, "idempotent": True}},
    side_effects=False,
    timeout_s=3,
)
SCHEMA = {
    "type": "object",
    "properties": {"n": {"type": "integer"}, "s": {"type": "string"}},
    "required": ["n"],
}


def listed(name: str, schema: dict[str, Any] | None = None, **fields: Any) -> mcp_types.Tool:
    return mcp_types.Tool(name=name, input_schema=schema or SCHEMA, **fields)


async def never(name: str, args: dict[str, Any]) -> mcp_types.CallToolResult:
    raise AssertionError("not called")


def test_policies_come_from_the_configuration_with_per_tool_overrides():
    read = make_spec(listed("read", description="Read it."), CONFIG, never)
    write = make_spec(listed("write"), CONFIG, never)
    assert (read.name, read.description, read.server, read.remote_name) == (
        "srv.read",
        "Read it.",
        "srv",
        "read",
    )
    assert (read.required_permissions, read.side_effects, read.idempotent, read.timeout_s) == (
        frozenset({"a"}),
        False,
        False,
        3.0,
    )
    assert (write.required_permissions, write.side_effects, write.idempotent) == (
        frozenset({"a", "w"}),
        True,
        True,
    )
    assert write.tags == {"mcp", "mcp:srv"}


def test_the_servers_hints_are_not_trusted():
    hinted = listed("rm", annotations=mcp_types.ToolAnnotations(read_only_hint=True))
    default = McpServerSettings(prefix="x", url="http://h/mcp")
    assert make_spec(hinted, default, never).side_effects  # declared by config: default True


async def test_args_are_checked_against_the_listed_schema():
    calls: list[tuple[str, dict[str, Any]]] = []

    async def record(name: str, args: dict[str, Any]) -> mcp_types.CallToolResult:
        calls.append((name, args))
        return mcp_types.CallToolResult(content=[], structured_content={"ok": True})

    spec = make_spec(listed("read"), CONFIG, record)
    assert spec.validate_args({"n": 1, "s": "x"}) == {"n": 1, "s": "x"}
    with pytest.raises(InvalidToolArgs) as caught:
        spec.validate_args({"n": "one", "extra": 1})
    assert "n: 'one' is not of type 'integer'" in str(caught.value)
    assert await spec.fn(n=1) == {"ok": True}
    assert calls == [("read", {"n": 1})]


def test_unusable_tools_are_skipped_and_include_filters():
    tools = [
        listed("fine"),
        listed("bad name!"),
        listed("broken", {"type": "object", "properties": {"x": {"type": 5}}}),
        listed("linked", {"type": "object", "properties": {"x": {"$ref": "http://x/s.json"}}}),
    ]
    assert list(listed_specs(tools, CONFIG, never)) == ["srv.fine"]
    only = CONFIG.model_copy(update={"include": ["other"]})
    assert listed_specs(tools, only, never) == {}


def text(value: str) -> mcp_types.TextContent:
    return mcp_types.TextContent(type="text", text=value)


@pytest.mark.parametrize(
    ("result", "value"),
    [
        (mcp_types.CallToolResult(content=[text("{}")], structured_content={"a": 1}), {"a": 1}),
        (mcp_types.CallToolResult(content=[text('{"b": [1]}')]), {"b": [1]}),
        (mcp_types.CallToolResult(content=[text("plain words")]), "plain words"),
        (mcp_types.CallToolResult(content=[text("1"), text("x")]), [1, "x"]),
        (
            mcp_types.CallToolResult(
                content=[mcp_types.ImageContent(type="image", data="AAAA", mime_type="image/png")]
            ),
            {"type": "image", "mime_type": "image/png"},
        ),
    ],
)
def test_results_become_json_values(result, value):
    assert result_value(result, tool_name="srv.t") == value


def test_an_error_result_raises_with_the_servers_text():
    result = mcp_types.CallToolResult(content=[text("disk full")], is_error=True)
    with pytest.raises(McpToolError, match=r"^MCP tool 'srv.t' reported an error: disk full$"):
        result_value(result, tool_name="srv.t")


def test_a_stdio_server_is_started_under_the_limits():
    limits = ServerLimits(memory_bytes=1024 * 1024 * 1024, open_files=64, file_bytes=1024 * 1024)
    probe = (
        "import resource as r; "
        "print(*(r.getrlimit(k)[0] for k in (r.RLIMIT_AS, r.RLIMIT_NOFILE, r.RLIMIT_FSIZE)))"
    )
    command, args = limited_command(sys.executable, ["-c", probe], limits)
    out = subprocess.run([command, *args], capture_output=True, text=True, timeout=30, check=True)
    assert out.stdout.split() == [str(1024**3), "64", str(1024**2)]
    assert limited_command("srv", ["--x"], None) == ("srv", ["--x"])


class Listed(McpServer):
    """A server whose tool list is given (no connection)."""

    def __init__(self, config: McpServerSettings, tools: dict[str, McpToolSpec]) -> None:
        super().__init__(config)
        self._given = tools

    @property
    def tools(self) -> dict[str, McpToolSpec]:
        return dict(self._given)


def test_the_router_puts_the_apps_tools_first_and_never_shadows_them(caplog):
    @tool(name="srv.read")
    def own() -> str:
        """The app's own tool of that name."""
        return "own"

    mounted = {
        name: make_spec(listed(name.split(".")[1]), CONFIG, never)
        for name in ("srv.read", "srv.other")
    }
    router = McpRouter(RegistryRouter([own]), [Listed(CONFIG, mounted)])
    assert [t.name for t in router.describe_all()] == ["srv.read", "srv.other"]
    assert router.describe_all()[0] is own
    assert router.get("srv.read") is own
    assert router.get("srv.other") is mounted["srv.other"]
    with pytest.raises(UnknownTool):
        router.get("srv.missing")
    warnings = [r for r in caplog.records if "not mounted: an app tool" in r.getMessage()]
    assert len(warnings) == 1  # said once, however often the tools are listed


def test_mcp_tools_refuse_a_sandbox_floor_above_inline(tmp_path):
    settings = load_settings(
        data_dir=tmp_path,
        sandbox={"default_tier": "process"},
        mcp={"servers": [{"prefix": "srv", "url": "http://127.0.0.1:1/mcp"}]},
    )
    with pytest.raises(ConfigError, match="cannot run MCP tools"):
        McpRouter.from_settings(RegistryRouter(), settings)


def test_stdio_servers_get_limits_and_http_ones_none(tmp_path):
    settings = load_settings(
        data_dir=tmp_path,
        sandbox={"limits": {"open_files": 99, "file_mb": 3}},
        mcp={
            "servers": [
                {"prefix": "a", "command": "srv", "memory_mb": 100},
                {"prefix": "b", "url": "http://127.0.0.1:1/mcp"},
            ]
        },
    )
    router = McpRouter.from_settings(RegistryRouter(), settings)
    stdio, http = router.servers
    assert stdio._limits == ServerLimits(
        memory_bytes=100 * 1024 * 1024, open_files=99, file_bytes=3 * 1024 * 1024
    )
    assert http._limits is None


def test_bad_mcp_settings_fail_at_start_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"mcp\.servers\.0\.url=None: .*exactly one of"):
        load_settings(data_dir=tmp_path, mcp={"servers": [{"prefix": "a"}]})
    with pytest.raises(ConfigError, match="two MCP servers share a prefix: a"):
        load_settings(
            data_dir=tmp_path,
            mcp={"servers": [{"prefix": "a", "command": "x"}, {"prefix": "a", "command": "y"}]},
        )
