"""`MemoryTools`: a ``remember`` tool the planner can call to keep a fact about the user for later.

Tools are registered before the system that runs them exists, so `MemoryTools` is bound to the
system's Memory Manager afterwards (``tools.bind(system.components.memory)``); a call before that
fails as a tool error, not a crash. The fact is filed under the *caller* (the run's principal,
from the `ToolContext`), never under a user the model names: a plan cannot write into another
user's memory. The step's idempotency key makes the write happen once however often the step is
retried or replayed. What is stored passes the system's redactor (`RedactingMemory`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from bastion.memory.facts import MAX_FACT_CHARS
from bastion.memory.interface import MemoryManager
from bastion.router.interface import ToolContext, ToolSpec
from bastion.router.registry import make_tool

#: The scope a caller needs to use ``remember``.
MEMORY_WRITE_SCOPE = "memory:write"

FactText = Annotated[str, Field(min_length=1, max_length=MAX_FACT_CHARS)]


class RememberedFact(BaseModel):
    """What ``remember`` returns."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    fact_id: int
    fact: str


class MemoryTools:
    """The ``remember`` tool, writing to a Memory Manager bound after the system is built."""

    def __init__(self) -> None:
        self._memory: MemoryManager | None = None

    def bind(self, memory: MemoryManager) -> None:
        """Write to `memory` from now on."""
        self._memory = memory

    def tools(self, *, permissions: tuple[str, ...] = (MEMORY_WRITE_SCOPE,)) -> list[ToolSpec]:
        """The tools to register (``remember``), each needing `permissions`."""
        return [
            make_tool(
                self.remember,
                permissions=permissions,
                timeout_s=10.0,
                side_effects=True,
                idempotent=True,
            )
        ]

    async def remember(self, fact: FactText, ctx: ToolContext) -> RememberedFact:
        """Remember a lasting fact about this user for later conversations.

        Use it when the user states a preference or a detail that will matter again (how to
        contact them, their language, a standing instruction); not for one-off questions.

        Args:
            fact: One short sentence about the user, e.g. "Prefers to be contacted by email".
            ctx: Supplied by the runtime: who is acting, and the step's idempotency key.
        """
        if self._memory is None:
            raise RuntimeError("the memory tools are not bound to a memory yet")
        stored = await self._memory.remember(
            ctx.principal.id,
            fact,
            source="tool",
            source_key=ctx.idempotency_key,
            run_id=ctx.run_id,
        )
        return RememberedFact(fact_id=stored.fact_id, fact=stored.content)
