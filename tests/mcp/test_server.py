"""Real MCP servers mounted as tools: listed, called, timed out, crashed, refreshed."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

import mcp_types
import pytest
from tests.mcp.conftest import WAIT_S, HttpServer, kill, only_child, time_server

from bastion.clock import SystemClock
from bastion.errors import ConfigError
from bastion.mcp import McpRouter, McpServer, McpServerDown, McpToolSpec
from bastion.messages import Principal, ToolCall, ToolErrorKind, ToolOutcome
from bastion.router.default import RegistryRouter
from bastion.sandbox.default import TieredSandbox
from bastion.settings import SandboxSettings

CLOCK = SystemClock()
USER = Principal(id="u", roles=frozenset(), scopes=frozenset({"*"}))


async def run_tool(
    spec: McpToolSpec, args: dict[str, Any], *, limit_s: float = 20.0
) -> ToolOutcome:
    """One call through the sandbox, as a run makes it."""
    sandbox = TieredSandbox(clock=CLOCK, settings=SandboxSettings())
    call = ToolCall(run_id="r", step_id=0, tool_name=spec.name, args=args)
    return await sandbox.run(call, spec, deadline=CLOCK.monotonic() + limit_s, principal=USER)


async def test_the_time_servers_tools_are_listed_with_their_policies_and_called():
    server = McpServer(time_server(tools={"convert_time": {"scopes": ["clock", "convert"]}}))
    await server.start()
    try:
        tools = server.tools
        assert sorted(tools) == ["time.convert_time", "time.get_current_time"]
        now = tools["time.get_current_time"]
        assert now.required_permissions == {"clock"}
        assert tools["time.convert_time"].required_permissions == {"clock", "convert"}
        assert (now.side_effects, now.idempotent, now.timeout_s) == (False, False, 10.0)
        assert "timezone" in now.args_schema["properties"]
        assert now.return_schema is not None
        assert "datetime" in now.return_schema["properties"]

        outcome = await run_tool(now, {"timezone": "Europe/Paris"})
        assert outcome.ok, outcome.error
        assert outcome.value["timezone"] == "Europe/Paris"
        assert {"datetime", "day_of_week", "is_dst"} <= set(outcome.value)

        refused = await run_tool(now, {"tz": "Europe/Paris"})
        assert refused.error_kind is ToolErrorKind.INVALID_ARGS
        assert "'timezone' is a required property" in (refused.error or "")

        failed = await run_tool(now, {"timezone": "Nowhere/Atlantis"})
        assert failed.error_kind is ToolErrorKind.TOOL_ERROR
        assert "Nowhere/Atlantis" in (failed.error or "")
    finally:
        await server.aclose()


async def test_a_hung_stdio_server_times_out_and_serves_again_once_it_resumes():
    server = McpServer(time_server(timeout_s=0.5))
    await server.start()
    pid = only_child("mcp_server_time")
    try:
        os.kill(pid, signal.SIGSTOP)  # the server hangs: alive, but answers nothing
        try:
            outcome = await run_tool(server.tools["time.get_current_time"], {"timezone": "UTC"})
        finally:
            os.kill(pid, signal.SIGCONT)
        assert outcome.error_kind is ToolErrorKind.TIMEOUT
        assert "timed out after 0.5s" in (outcome.error or "")
        again = await run_tool(server.tools["time.get_current_time"], {"timezone": "UTC"})
        assert again.ok, again.error
        # Closed with its system, a server starts again with it.
        await server.aclose()
        assert not server.connected
        await server.start()
        assert server.connected
    finally:
        await server.aclose()


async def test_a_killed_stdio_server_is_a_tool_error_then_is_restarted(tmp_path):
    errlog = (tmp_path / "stderr.txt").open("w")  # a real file: the child writes to its fd
    server = McpServer(time_server(), errlog=errlog)
    await server.start()
    try:
        spec = server.tools["time.get_current_time"]
        kill(only_child("mcp_server_time"))
        outcome = await run_tool(spec, {"timezone": "UTC"})
        assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
        assert "McpServerDown: MCP server 'time' closed the connection" in (outcome.error or "")
        assert "may have crashed" in (outcome.error or "")
        # The next call starts the server again.
        again = await run_tool(spec, {"timezone": "UTC"})
        assert again.ok, again.error
        assert server.connected
    finally:
        await server.aclose()
        errlog.close()


async def test_a_server_that_cannot_start_fails_the_start_naming_it():
    server = McpServer(
        time_server(args=["-c", "import sys; sys.exit(3)"], connect_timeout_s=WAIT_S)
    )
    with pytest.raises(ConfigError, match=r"MCP server 'time' could not be started or reached"):
        await server.start()
    assert server.tools == {}


async def test_an_optional_unreachable_server_is_skipped_and_a_required_one_is_not():
    native = RegistryRouter()
    optional = McpServer(time_server(args=["-c", "pass"], required=False))
    router = McpRouter(native, [optional])
    await router.start()
    assert router.describe_all() == ()
    await router.aclose()

    required = McpRouter(native, [McpServer(time_server(args=["-c", "pass"]))])
    with pytest.raises(ConfigError, match="'time'"):
        await required.start()


async def test_a_closed_server_refuses_calls():
    server = McpServer(time_server())
    await server.aclose()
    await server.aclose()  # twice is fine
    with pytest.raises(McpServerDown, match="is closed"):
        await server.call("get_current_time", {"timezone": "UTC"})


# -- streamable HTTP ---------------------------------------------------------------------------


async def test_an_http_servers_tools_are_listed_called_and_refreshed(http_server: HttpServer):
    changed = asyncio.Event()
    server = McpServer(http_server.settings(), on_change=changed.set)
    router = McpRouter(RegistryRouter(), [server])
    await router.start()
    try:
        assert sorted(server.tools) == ["web.add", "web.fail", "web.grow", "web.hang"]
        outcome = await run_tool(server.tools["web.add"], {"a": 2, "b": 40})
        assert outcome.ok, outcome.error
        assert outcome.value == {"sum": 42}
        failed = await run_tool(server.tools["web.fail"], {"reason": "x"})
        assert failed.error_kind is ToolErrorKind.TOOL_ERROR
        assert "MCP tool 'web.fail' reported an error" in (failed.error or "")
        hung = await run_tool(server.tools["web.hang"], {}, limit_s=0.5)
        assert hung.error_kind is ToolErrorKind.TIMEOUT

        # The server mounts a tool and says its list changed: the router sees it next lookup.
        assert changed.is_set()  # the first listing is a change too
        changed.clear()
        assert "web.extra" not in {t.name for t in router.describe_all()}
        grown = await run_tool(server.tools["web.grow"], {})
        assert grown.ok, grown.error
        await asyncio.wait_for(changed.wait(), timeout=WAIT_S)
        assert "web.extra" in {t.name for t in router.describe_all()}
        extra = await run_tool(server.tools["web.extra"], {})
        assert extra.value == {"result": "extra!"}
    finally:
        await router.aclose()


async def test_a_killed_http_server_is_a_tool_error_with_a_clear_message(
    http_server: HttpServer,
):
    server = McpServer(http_server.settings(connect_timeout_s=5.0))
    await server.start()
    try:
        spec = server.tools["web.add"]
        http_server.kill()
        outcome = await run_tool(spec, {"a": 1, "b": 1})
        assert outcome.error_kind is ToolErrorKind.TOOL_ERROR
        assert "MCP server 'web' closed the connection during a call of 'add'" in (
            outcome.error or ""
        )
        # While it stays down, each call says it cannot be reached (after trying to reconnect).
        again = await run_tool(spec, {"a": 1, "b": 1})
        assert again.error_kind is ToolErrorKind.TOOL_ERROR
        assert f"MCP server 'web' could not be started or reached ({http_server.url})" in (
            again.error or ""
        )
    finally:
        await server.aclose()


async def test_legacy_list_changed_notifications_wake_the_refresh():
    server = McpServer(time_server())
    assert not server._wake.is_set()
    await server._on_message(mcp_types.ToolListChangedNotification())
    assert server._wake.is_set()
