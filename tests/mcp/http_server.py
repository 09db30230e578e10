"""A small MCP server for the tests, served over streamable HTTP: ``python http_server.py PORT``.

Tools: ``add`` (structured result), ``hang`` (never answers), ``fail`` (an error result) and
``grow`` (mounts one more tool, ``extra``, and says the tool list changed).
"""

from __future__ import annotations

import asyncio
import sys

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("bastion-test", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> dict[str, int]:
    """Add two numbers."""
    return {"sum": a + b}


@server.tool()
async def hang() -> str:
    """Never answers."""
    await asyncio.Event().wait()
    return "never"


@server.tool()
def fail(reason: str) -> str:
    """Always fails."""
    raise ValueError(f"failed on purpose: {reason}")


def extra() -> str:
    """A tool mounted at run time."""
    return "extra!"


@server.tool()
async def grow(ctx: Context) -> str:
    """Mount the `extra` tool and announce it."""
    server.add_tool(extra)
    await ctx.notify_tools_changed()
    return "grown"


if __name__ == "__main__":
    server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[1]))
