"""`Checkpoints`: where the run loop marks its units of work as durable steps.

The flow names two kinds of unit whose outcome must survive a crash and never be redone once
done: a tool call *together with its execution-time authorization* (so that a call interrupted
before it ran is authorized afresh after a restart, and one that ran is never re-decided), and the
authorization of a fresh plan. In process (`InProcess`) a unit simply runs; with durable execution
(`bastion.durable.steps.DurableCheckpoints`) each is one checkpointed step, and a call of a tool
with side effects that is not idempotent is never re-run blindly.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from pydantic import TypeAdapter

from bastion.messages import ToolOutcome
from bastion.router.interface import ToolSpec

T = TypeVar("T")


class Checkpoints(Protocol):
    """Runs a unit of a run's work, at most once to completion across crashes and restarts."""

    async def call(self, spec: ToolSpec, fn: Callable[[], Awaitable[ToolOutcome]]) -> ToolOutcome:
        """Run one authorized tool call (`fn` authorizes, then calls the sandbox)."""
        ...

    async def step(self, name: str, fn: Callable[[], Awaitable[T]], adapter: TypeAdapter[T]) -> T:
        """Run `fn` once; `adapter` stores its result as JSON."""
        ...


class InProcess(Checkpoints):
    """No checkpoints: each unit just runs (runs without durable execution)."""

    async def call(self, spec: ToolSpec, fn: Callable[[], Awaitable[ToolOutcome]]) -> ToolOutcome:
        return await fn()

    async def step(self, name: str, fn: Callable[[], Awaitable[T]], adapter: TypeAdapter[T]) -> T:
        return await fn()
