"""Well-behaved (and a few badly-behaved) tools for the isolated tiers' functional tests.

Imported by name in the sandbox child, like the hostile tools; unlike them, these use Bastion's
types (a `Decimal`, a `ToolContext`, a pydantic result), so the child rebuilds args and results.
"""

from __future__ import annotations

import ctypes
import os
from decimal import Decimal

from pydantic import BaseModel

from bastion.errors import TransientToolError
from bastion.router.interface import ToolContext
from bastion.router.registry import make_tool


class Total(BaseModel):
    amount: Decimal
    items: int


def add_money(a: Decimal, b: Decimal) -> Total:
    """Add two amounts exactly."""
    assert isinstance(a, Decimal)
    assert isinstance(b, Decimal)
    return Total(amount=a + b, items=2)


def whoami(label: str, ctx: ToolContext) -> dict[str, object]:
    """Who is acting, and the step's idempotency key."""
    return {
        "label": label,
        "principal": ctx.principal.id,
        "scopes": sorted(ctx.principal.scopes),
        "key": ctx.idempotency_key,
        "attempt": ctx.attempt,
    }


async def async_double(n: int) -> int:
    """Double `n`, asynchronously."""
    return n * 2


def flaky() -> int:
    """Fail in a way worth retrying."""
    raise TransientToolError("upstream said 503")


def broken(n: int) -> int:
    """Fail for good."""
    raise ValueError(f"cannot handle {n}")


def unjsonable() -> object:
    """Return something that is not JSON."""
    return object()


def big_result(size: int) -> str:
    """Return `size` characters."""
    return "x" * size


def segfault() -> int:
    """Read address 0."""
    return len(ctypes.string_at(0))


def exit_quietly() -> int:
    """Leave without a word."""
    os._exit(3)


def whoami_uid() -> list[int]:
    """The uid and gid the tool runs as."""
    return [os.getuid(), os.getgid()]


#: A `ToolSpec` bound to the function's name, as ``@tool`` does: the child unwraps it.
decorated = make_tool(async_double, name="decorated")
