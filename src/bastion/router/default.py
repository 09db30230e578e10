"""`RegistryRouter`: the default `ToolRouter`, an ordered in-memory registry of `ToolSpec`s.

Registration order is kept because it is the order the planner lists tools to the model. Whether
every fallback names a registered tool can only be known once all tools are in, so it is checked
by `validate` (which the system calls when it is built) and, failing that, on first lookup.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Any

from bastion.errors import ConfigError, UnknownTool
from bastion.router.interface import ToolRouter, ToolSpec
from bastion.router.registry import make_tool

#: How many known names an `UnknownTool` message lists before it says "and N more".
_LISTED_NAMES = 20


class RegistryRouter(ToolRouter):
    """Tools by name, in registration order. Lookups never run a tool.

    Args:
        tools: `ToolSpec`s (e.g. functions decorated with `bastion.router.registry.tool`) or
            plain callables, which are turned into tools with default options.

    Raises:
        ConfigError: as `register`.
    """

    def __init__(self, tools: Iterable[ToolSpec | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, ToolSpec] = {}
        self._validated = True
        for item in tools:
            self.register(item)

    def register(self, tool: ToolSpec | Callable[..., Any], /, **options: Any) -> ToolSpec:
        """Add a tool; a plain callable goes through `make_tool` with `options`.

        Returns:
            The registered spec.

        Raises:
            ConfigError: the name is taken, options were given with a `ToolSpec` (set them on
                the decorator instead), or `make_tool` refused the callable.
        """
        if isinstance(tool, ToolSpec):
            if options:
                raise ConfigError(
                    f"tool {tool.name!r} is already a ToolSpec; give options {sorted(options)} "
                    "to its @tool(...) decorator instead"
                )
            spec = tool
        else:
            spec = make_tool(tool, **options)
        if spec.name in self._tools:
            raise ConfigError(
                f"a tool named {spec.name!r} is already registered; give one of them another name"
            )
        self._tools[spec.name] = spec
        self._validated = False
        return spec

    def validate(self) -> None:
        """Check the registry as a whole: every declared fallback is a registered tool.

        Raises:
            ConfigError: naming each tool whose fallback is unknown.
        """
        dangling = [
            f"{spec.name!r} -> {spec.fallback!r}"
            for spec in self._tools.values()
            if spec.fallback is not None and spec.fallback not in self._tools
        ]
        if dangling:
            raise ConfigError(
                "fallback names an unregistered tool: "
                + ", ".join(dangling)
                + "; register the fallback tool or remove the fallback"
            )
        self._validated = True

    def describe_all(self) -> tuple[ToolSpec, ...]:
        self._ensure_valid()
        return tuple(self._tools.values())

    def get(self, name: str) -> ToolSpec:
        self._ensure_valid()
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool(self._unknown_message(name), tool_name=name) from None

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def _ensure_valid(self) -> None:
        if not self._validated:
            self.validate()

    def _unknown_message(self, name: str) -> str:
        names = list(self._tools)
        if not names:
            return f"unknown tool {name!r}: no tools are registered"
        listed = ", ".join(names[:_LISTED_NAMES])
        if len(names) > _LISTED_NAMES:
            listed += f" (and {len(names) - _LISTED_NAMES} more)"
        message = f"unknown tool {name!r}; known tools: {listed}"
        close = difflib.get_close_matches(name, names, n=1)
        if close:
            message += f"; did you mean {close[0]!r}?"
        return message
