"""MCP servers mounted as tools, through the official `mcp` SDK (stdio and streamable HTTP).

Each server configured in the ``mcp`` settings section becomes a `McpServer`; `McpRouter` adds
their tools, named ``<prefix>.<tool>``, to the app's. The tools then go through the same gate,
sandbox deadline, evaluator and recovery as native ones, with the policies the configuration
declares. Needs the ``mcp`` extra (``pip install 'bastion[mcp]'``).
"""

from bastion.mcp.limits import ServerLimits, limited_command
from bastion.mcp.router import McpRouter
from bastion.mcp.server import McpServer, McpServerDown
from bastion.mcp.tools import McpToolError, McpToolSpec

__all__ = [
    "McpRouter",
    "McpServer",
    "McpServerDown",
    "McpToolError",
    "McpToolSpec",
    "ServerLimits",
    "limited_command",
]
