"""The `tool` decorator and `make_tool`: a typed callable becomes a `ToolSpec`.

This is where an app declares its tools and their policies (permissions, timeout, side effects,
idempotency, fallback, price, sandbox tier). Every option is checked here, when the module that
declares the tool is imported, so a mistake is a `ConfigError` at start-up rather than a failed
run. Reading the signature itself is `bastion.router.signature`'s job.

A tool asking for the ``process`` or ``os`` sandbox tier is registered only if this machine can
provide that tier (`bastion.sandbox.capabilities.require_tier`, which says why not) and its
function can be imported by name in a child process; it never runs with weaker isolation than its
author asked for.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any, overload

from bastion.errors import ConfigError
from bastion.router.interface import SandboxTier, ToolSpec
from bastion.router.signature import inspect_tool

#: What a tool name may look like: short, and safe in a JSON schema ``const``, a log and a URL.
TOOL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.-]{0,63}$")
_TIERS: tuple[SandboxTier, ...] = ("inline", "process", "os")


def make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    permissions: Iterable[str] = (),
    timeout_s: float | None = None,
    side_effects: bool = False,
    idempotent: bool = False,
    fallback: str | None = None,
    cost_usd: Decimal | int | str = Decimal(0),
    sandbox: SandboxTier = "inline",
    tags: Iterable[str] = (),
) -> ToolSpec:
    """Turn `fn` into a `ToolSpec`.

    Args:
        fn: A sync or async callable; its signature gives the args schema, its docstring the
            description (first paragraph) and per-argument descriptions (``Args:`` section).
        name: The name the planner uses; defaults to ``fn.__name__``.
        permissions: Scopes a caller must hold to use the tool, e.g. ``("refunds:write",)``.
        timeout_s: Longest a call may run; None takes the sandbox's default.
        side_effects: Whether a call changes something outside the run (money, mail, records).
        idempotent: Whether running the same call twice is safe (it keys on the idempotency key).
        fallback: Another tool to try when this one fails for good.
        cost_usd: Price of one call, charged against the run's budget.
        sandbox: Isolation tier to run in: ``"inline"`` (the event loop), ``"process"`` (a
            child process with resource limits) or ``"os"`` (the same inside bubblewrap).
        tags: Free labels for grouping tools (dashboards, filters).

    Raises:
        ConfigError: an option is invalid, or the signature cannot be described (see
            `bastion.router.signature.inspect_tool`).
    """
    if isinstance(fn, ToolSpec):
        raise ConfigError(f"{fn.name!r} is already a tool; register the ToolSpec as it is")
    if not callable(fn):
        raise ConfigError(f"a tool must be a callable, not {type(fn).__name__}: {fn!r}")
    tool_name = _tool_name(fn, name)
    signature = inspect_tool(fn, name=tool_name)
    return ToolSpec(
        name=tool_name,
        description=signature.description,
        fn=fn,
        args_model=signature.args_model,
        args_schema=signature.args_schema,
        is_async=signature.is_async,
        context_param=signature.context_param,
        return_adapter=signature.return_adapter,
        return_schema=signature.return_schema,
        required_permissions=_labels(permissions, tool_name, "permissions"),
        timeout_s=_timeout(timeout_s, tool_name),
        side_effects=_flag(side_effects, tool_name, "side_effects"),
        idempotent=_flag(idempotent, tool_name, "idempotent"),
        fallback=_fallback(fallback, tool_name),
        cost_usd=_cost(cost_usd, tool_name),
        sandbox=_tier(sandbox, tool_name, fn),
        tags=_labels(tags, tool_name, "tags"),
    )


@overload
def tool(fn: Callable[..., Any], /) -> ToolSpec: ...


@overload
def tool(
    *,
    name: str | None = None,
    permissions: Iterable[str] = (),
    timeout_s: float | None = None,
    side_effects: bool = False,
    idempotent: bool = False,
    fallback: str | None = None,
    cost_usd: Decimal | int | str = Decimal(0),
    sandbox: SandboxTier = "inline",
    tags: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], ToolSpec]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    **options: Any,
) -> ToolSpec | Callable[[Callable[..., Any]], ToolSpec]:
    """Declare a tool: ``@tool`` bare, or ``@tool(name=..., permissions=(...), ...)``.

    The decorated name is bound to the resulting `ToolSpec` (the original callable stays
    reachable as ``spec.fn``). The options are those of `make_tool`.

    Raises:
        ConfigError: as `make_tool`.
    """
    if fn is not None:
        if options:
            raise ConfigError("pass options as @tool(...) keywords, not together with the function")
        return make_tool(fn)

    def decorate(inner: Callable[..., Any]) -> ToolSpec:
        return make_tool(inner, **options)

    return decorate


def _tool_name(fn: Callable[..., Any], name: str | None) -> str:
    if name is None:
        name = getattr(fn, "__name__", None)
        if not isinstance(name, str) or name == "<lambda>":
            raise ConfigError(f"cannot infer a tool name for {fn!r}; pass name=...")
    _check_name(name, "tool name")
    return name


def _check_name(name: object, what: str) -> None:
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise ConfigError(
            f"invalid {what} {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', "
            "starting with a letter or '_'"
        )


def _labels(values: Iterable[str], name: str, what: str) -> frozenset[str]:
    # A lone string is iterable too: ``permissions="refunds:write"`` would become a set of letters.
    if isinstance(values, str):
        raise ConfigError(f"tool {name!r}: {what} must be a tuple of strings, e.g. ({values!r},)")
    labels = tuple(values)
    bad = [v for v in labels if not isinstance(v, str) or not v.strip()]
    if bad:
        raise ConfigError(f"tool {name!r}: {what} must be non-empty strings, got {bad!r}")
    return frozenset(labels)


def _timeout(timeout_s: float | None, name: str) -> float | None:
    if timeout_s is None:
        return None
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float):
        raise ConfigError(f"tool {name!r}: timeout_s must be a number of seconds or None")
    if not math.isfinite(timeout_s) or timeout_s <= 0:
        raise ConfigError(f"tool {name!r}: timeout_s must be positive and finite, got {timeout_s}")
    return float(timeout_s)


def _flag(value: bool, name: str, what: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"tool {name!r}: {what} must be True or False, got {value!r}")
    return value


def _fallback(fallback: str | None, name: str) -> str | None:
    if fallback is None:
        return None
    _check_name(fallback, f"fallback of tool {name!r}:")
    if fallback == name:
        raise ConfigError(f"tool {name!r} names itself as its fallback; name another tool or None")
    return fallback


def _cost(cost_usd: Decimal | int | str, name: str) -> Decimal:
    # Floats are refused: Decimal(0.1) is 0.1000000000000000055..., not the price meant.
    if isinstance(cost_usd, bool | float):
        raise ConfigError(
            f"tool {name!r}: cost_usd must be a Decimal, int or str, not {cost_usd!r} "
            f"(write Decimal({str(cost_usd)!r}))"
        )
    try:
        cost = Decimal(cost_usd)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise ConfigError(f"tool {name!r}: cost_usd {cost_usd!r} is not a number") from exc
    if not cost.is_finite() or cost < 0:
        raise ConfigError(f"tool {name!r}: cost_usd must be zero or more, got {cost_usd}")
    return cost


def _tier(sandbox: str, name: str, fn: Callable[..., Any]) -> SandboxTier:
    for tier in _TIERS:
        if sandbox == tier:
            if tier != "inline":
                # Imported here: the sandbox package imports the router's interface.
                from bastion.sandbox.capabilities import require_tier

                require_tier(tier, tool=name, fn=fn)
            return tier
    raise ConfigError(f"tool {name!r}: unknown sandbox tier {sandbox!r}; use one of {_TIERS}")
