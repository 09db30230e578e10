"""`McpRouter`: a `ToolRouter` that adds mounted MCP servers' tools to another router's.

A wrapper (STYLE.md §2): the app's own tools stay in the wrapped router, untouched; each server's
tools are read from it at every lookup, so a refreshed tool list is seen by the next run. The
router owns the servers' lifetime: `start` connects them all (concurrently), `aclose` ends them.
A mounted name that a native tool already has is not mounted (the app's tool wins, and a warning
says so).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from bastion.errors import ConfigError, UnknownTool
from bastion.mcp.limits import ServerLimits
from bastion.mcp.server import McpServer
from bastion.router.interface import ToolRouter, ToolSpec
from bastion.settings import Settings

logger = logging.getLogger(__name__)


class McpRouter(ToolRouter):
    """The wrapped router's tools, then each server's.

    Args:
        wrapped: The app's own tools.
        servers: The mounted servers, each under its own prefix.
    """

    def __init__(self, wrapped: ToolRouter, servers: Sequence[McpServer]) -> None:
        self.wrapped = wrapped
        self.servers = tuple(servers)
        self._shadowed: set[str] = set()

    @classmethod
    def from_settings(cls, wrapped: ToolRouter, settings: Settings) -> McpRouter:
        """Mount the servers of ``settings.mcp`` (stdio ones under `bastion.mcp.limits`).

        Raises:
            ConfigError: ``sandbox.default_tier`` is above ``inline``: an MCP tool's call is a
                message on the server's connection, held by this process; a worker process
                cannot send it (the server itself runs in its own process, under rlimits).
        """
        if settings.mcp.servers and settings.sandbox.default_tier != "inline":
            raise ConfigError(
                f"sandbox.default_tier={settings.sandbox.default_tier!r} cannot run MCP tools: "
                "their calls are sent on this process's connection to the server (which runs "
                "in its own process); set the tier per tool (@tool(sandbox=...)) instead"
            )
        servers = [
            McpServer(
                config,
                limits=ServerLimits.from_settings(config, settings.sandbox.limits)
                if config.command is not None
                else None,
            )
            for config in settings.mcp.servers
        ]
        return cls(wrapped, servers)

    async def start(self) -> None:
        """Connect every server; a required one that cannot be reached fails the start.

        Raises:
            ConfigError: naming each required server that could not be reached.
        """
        results = await asyncio.gather(
            *(server.start() for server in self.servers), return_exceptions=True
        )
        problems = []
        for server, result in zip(self.servers, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                if server.config.required:
                    problems.append(str(result))
                else:
                    logger.warning("MCP server %r not mounted: %s", server.prefix, result)
        if problems:
            await self.aclose()
            raise ConfigError("; ".join(problems))

    async def aclose(self) -> None:
        """Close every server. Safe to call twice."""
        await asyncio.gather(*(server.aclose() for server in self.servers))

    def describe_all(self) -> tuple[ToolSpec, ...]:
        own = self.wrapped.describe_all()
        return own + tuple(self._mounted({spec.name for spec in own}).values())

    def get(self, name: str) -> ToolSpec:
        try:
            return self.wrapped.get(name)
        except UnknownTool:
            for server in self.servers:
                spec = server.tools.get(name)
                if spec is not None:
                    return spec
            raise

    def _mounted(self, taken: set[str]) -> dict[str, ToolSpec]:
        mounted: dict[str, ToolSpec] = {}
        for server in self.servers:
            for name, spec in server.tools.items():
                if name in taken:
                    if name not in self._shadowed:  # said once, not at every lookup
                        self._shadowed.add(name)
                        logger.warning("MCP tool %r not mounted: an app tool has that name", name)
                    continue
                mounted[name] = spec
        return mounted
