"""Admit: who is asking (gate), may they spend (cost), what do we remember (memory).

Raises the `AdmissionError` family; `AgentSystem` turns it into a terminal run with a clear message.
"""

from __future__ import annotations

from bastion.flow.components import Components
from bastion.flow.state import RunState
from bastion.memory.interface import MemoryContext


async def admit(run: RunState, c: Components) -> MemoryContext:
    """Authenticate, open the budget and load the planner's context.

    Raises:
        NotAuthenticated: the gate does not know the caller.
        BudgetExceeded: the budget cannot be opened.
    """
    principal = await c.gate.authenticate(run.request)
    run.principal = principal
    await c.cost.admit(run.request, principal)
    return await c.memory.load_context(
        run.request, token_budget=c.settings.planner.context_token_budget
    )
