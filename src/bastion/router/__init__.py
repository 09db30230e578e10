"""The Tool Router: typed callables registered as tools, looked up by name.

`tool` / `make_tool` turn a function into a `ToolSpec`; `RegistryRouter` holds them.
"""

from bastion.router.default import RegistryRouter
from bastion.router.interface import SandboxTier, ToolContext, ToolRouter, ToolSpec
from bastion.router.registry import make_tool, tool

__all__ = [
    "RegistryRouter",
    "SandboxTier",
    "ToolContext",
    "ToolRouter",
    "ToolSpec",
    "make_tool",
    "tool",
]
