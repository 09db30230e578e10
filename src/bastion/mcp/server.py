"""`McpServer`: one mounted MCP server, its connection and its current tools.

The connection is held by a task of its own (the owner): the SDK's transports are anyio task
groups, which must be entered and left by the same task, and a failure inside one cancels the task
that entered it. Held by a run or by `AgentSystem.start`, a server crash would cancel that; held by
the owner, it only ends the owner, and the next call sees a closed connection.

* A call on a live connection goes straight to the SDK. A connection that closes under a call
  (the server died, the HTTP endpoint went away) is a `McpServerDown` with a message naming the
  server; the sandbox turns it into a failed outcome, never a crashed run. A call that hangs is
  ended by the sandbox's deadline (the tool's ``timeout_s``), like any inline tool.
* A call on a closed connection reconnects first (within ``connect_timeout_s``): a restarted
  stdio server, or an HTTP server that came back, serves the call; one that cannot be reached
  is a `McpServerDown` saying so.
* The tool list is fetched at connect and again whenever the server says it changed: the
  ``notifications/tools/list_changed`` notification of handshake-era servers, and the
  ``subscriptions/listen`` stream of 2026-07-28 servers. The refresh runs in the owner task, not
  in the notification handler (which runs in the SDK's receive loop: a request from there would
  wait on itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any, TextIO

import anyio
import mcp_types
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ListenNotSupportedError
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from bastion.errors import ConfigError, ToolCrashed
from bastion.mcp.limits import ServerLimits, limited_command
from bastion.mcp.tools import McpToolSpec, listed_specs
from bastion.settings import McpServerSettings

logger = logging.getLogger(__name__)

#: Pages of ``tools/list`` read at most: a server that pages forever cannot hang a refresh.
_MAX_PAGES = 50


class McpServerDown(ToolCrashed):
    """The MCP server is not reachable: it crashed, was stopped, or cannot be started."""


class McpServer:
    """One MCP server, connected on `start`, its tools mounted under ``<prefix>.``.

    Args:
        config: The server's settings (transport, prefix, policies, timeouts).
        limits: rlimits for a stdio server's process (None: none applied).
        errlog: Where a stdio server's stderr goes (the process's stderr by default).
        on_change: Called after the tool list changed (e.g. to invalidate caches).
    """

    def __init__(
        self,
        config: McpServerSettings,
        *,
        limits: ServerLimits | None = None,
        errlog: TextIO | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self._limits = limits
        self._errlog = errlog
        self._on_change = on_change
        self._tools: dict[str, McpToolSpec] = {}
        self._client: Client | None = None
        self._owner: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._closing = False
        self._lock = asyncio.Lock()
        self._last_error: str | None = None

    @property
    def prefix(self) -> str:
        """The name prefix of this server's tools."""
        return self.config.prefix

    @property
    def connected(self) -> bool:
        """Whether a connection is open (it may still turn out closed on the next call)."""
        return self._client is not None

    @property
    def tools(self) -> dict[str, McpToolSpec]:
        """The mounted tools by name (the last listing, kept while the server is down)."""
        return dict(self._tools)

    async def start(self) -> None:
        """Connect and list the tools.

        Raises:
            ConfigError: the server could not be reached within ``connect_timeout_s``.
        """
        self._closing = False  # a server closed with its system may be started again with it
        try:
            await self._connect()
        except McpServerDown as exc:
            raise ConfigError(str(exc)) from exc

    async def aclose(self) -> None:
        """Close the connection (a stdio server is stopped). Safe to call twice."""
        self._closing = True
        owner, self._owner = self._owner, None
        if owner is not None:
            self._wake.set()
            with contextlib.suppress(Exception):
                # A transport that will not close (a wedged server) is not waited for forever.
                await asyncio.wait_for(owner, timeout=self.config.connect_timeout_s)
        self._client = None

    async def call(self, name: str, args: dict[str, Any]) -> mcp_types.CallToolResult:
        """Call the tool named `name` on the server (reconnecting first if the connection closed).

        Raises:
            McpServerDown: the server is unreachable, or the connection closed during the call.
        """
        client = self._client
        if client is None:
            client = await self._connect()
        try:
            return await client.call_tool(name, args)
        except MCPError as exc:
            if exc.code != mcp_types.CONNECTION_CLOSED:
                raise
            self._lost(client, str(exc))
            raise McpServerDown(
                f"MCP server {self.prefix!r} closed the connection during a call of {name!r} "
                f"({exc}); the server may have crashed. Whether the call took effect is unknown; "
                "the next call restarts or reconnects to the server",
                tool_name=f"{self.prefix}.{name}",
            ) from exc

    # -- the connection ------------------------------------------------------------------------

    async def _connect(self) -> Client:
        async with self._lock:
            if self._client is not None:
                return self._client
            if self._closing:
                raise McpServerDown(f"MCP server {self.prefix!r} is closed")
            loop = asyncio.get_running_loop()
            ready: asyncio.Future[Client] = loop.create_future()
            self._wake = asyncio.Event()
            self._owner = asyncio.create_task(self._own(ready), name=f"mcp:{self.prefix}")
            try:
                return await asyncio.wait_for(
                    asyncio.shield(ready), timeout=self.config.connect_timeout_s
                )
            except TimeoutError:
                await self._stop_owner()
                raise McpServerDown(
                    f"MCP server {self.prefix!r} did not answer within "
                    f"{self.config.connect_timeout_s:g}s ({self._where()})"
                ) from None
            except Exception as exc:
                await self._stop_owner()
                raise McpServerDown(
                    f"MCP server {self.prefix!r} could not be started or reached "
                    f"({self._where()}): {_describe(exc)}"
                ) from exc

    async def _stop_owner(self) -> None:
        owner, self._owner = self._owner, None
        if owner is not None and not owner.done():
            owner.cancel()
            with contextlib.suppress(BaseException):
                await owner

    async def _own(self, ready: asyncio.Future[Client]) -> None:
        """Hold one connection until closed, refreshing the tool list when told it changed."""
        client = Client(self._transport(), message_handler=self._on_message)
        try:
            async with client:
                await self._refresh(client)
                self._client, self._last_error = client, None
                ready.set_result(client)
                async with anyio.create_task_group() as group:
                    if client.protocol_version in MODERN_PROTOCOL_VERSIONS:
                        group.start_soon(self._listen, client)
                    while not self._closing and self._client is client:
                        await self._wake.wait()
                        self._wake.clear()
                        if not self._closing and self._client is client:
                            await self._refresh(client)
                    group.cancel_scope.cancel()
        except Exception as exc:  # the connection failed or broke: calls will say so
            if not ready.done():
                ready.set_exception(exc)
            elif not self._closing:
                logger.warning("MCP server %r: connection lost: %s", self.prefix, _describe(exc))
            self._last_error = _describe(exc)
        finally:
            if self._client is client:
                self._client = None
            if not ready.done():
                ready.cancel()

    async def _listen(self, client: Client) -> None:
        try:
            async with client.listen(tools_list_changed=True) as subscription:
                async for _event in subscription:
                    self._wake.set()
        except ListenNotSupportedError:
            return
        except MCPError as exc:
            if exc.code != mcp_types.CONNECTION_CLOSED:
                # The server does not offer the stream (e.g. "Method not found"): no refreshes.
                logger.info("MCP server %r sends no tool list changes: %s", self.prefix, exc)
                return
            self._lost(client, _describe(exc))
            raise
        except Exception as exc:
            self._lost(client, _describe(exc))
            raise

    async def _on_message(self, message: Any) -> None:
        if isinstance(message, mcp_types.ToolListChangedNotification):
            self._wake.set()
        elif isinstance(message, Exception):
            logger.debug("MCP server %r: %s", self.prefix, message)

    async def _refresh(self, client: Client) -> None:
        listed: list[mcp_types.Tool] = []
        cursor: str | None = None
        for _ in range(_MAX_PAGES):
            page = await client.list_tools(cursor=cursor, cache_mode="refresh")
            listed.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                break
        tools = listed_specs(listed, self.config, self.call)
        changed = set(tools) != set(self._tools)
        self._tools = tools
        logger.info("MCP server %r: %d tool(s) mounted", self.prefix, len(tools))
        if changed and self._on_change is not None:
            self._on_change()

    def _lost(self, client: Client, reason: str) -> None:
        if self._client is client:
            self._client = None
            self._last_error = reason
            self._wake.set()  # the owner leaves the dead connection

    def _transport(self) -> Any:
        config = self.config
        if config.url is not None:
            return streamable_http_client(config.url)
        assert config.command is not None  # the settings hold exactly one of url and command
        command, args = limited_command(config.command, config.args, self._limits)
        params = StdioServerParameters(command=command, args=args, env=config.env or None)
        return stdio_client(params, errlog=self._errlog or sys.stderr)

    def _where(self) -> str:
        config = self.config
        return config.url or " ".join([config.command or "", *config.args]).strip()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(inner) for inner in exc.exceptions)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
