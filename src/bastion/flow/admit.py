"""Admit: who is asking (gate), may they spend (cost), what do we remember (memory).

The memory's context shares one token budget with the rest of the planner's prompt: admit
estimates what the fixed parts take (the planner's system prompt with the caller's tools, and the
request) and the memory fills what is left with facts, a summary and recent turns. Summarising
older turns is a model call, charged to this run like any other.

Raises the `AdmissionError` family; `AgentSystem` turns it into a terminal run with a clear message.
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import TypeAdapter

from bastion.cost.metered import MeteredChatModel
from bastion.cost.tokens import estimate_input_tokens
from bastion.flow.components import Components
from bastion.flow.state import RunState
from bastion.memory.interface import MemoryContext
from bastion.messages import Principal
from bastion.models.interface import ChatMessage, ChatRequest, ChatResponse
from bastion.planner.prompt import system_text

_CONTEXT: TypeAdapter[MemoryContext] = TypeAdapter(MemoryContext)


async def admit(run: RunState, c: Components) -> MemoryContext:
    """Authenticate, open the budget and load the planner's context.

    Raises:
        NotAuthenticated: the gate does not know the caller.
        RateLimited: the user or the app is over a rate limit (with the exact retry-after).
        BudgetExceeded: the budget cannot be opened.
    """
    principal = await c.gate.authenticate(run.request)
    run.principal = principal
    if c.limits is not None:
        # The run's tokens are not known yet: charge the planner's worst case for its prompt.
        tokens = c.settings.planner.max_tokens + len(run.request.message) // 4 + 1
        await c.limits.admit(principal.id, tokens=tokens, time_left_s=run.time_left_s)
    await c.cost.admit(run.request, principal)
    model = None
    if c.settings.memory.summarise:

        def on_call(response: ChatResponse, cost: Decimal) -> None:
            run.count_model_call(response, cost, purpose="summary")

        model = MeteredChatModel(wrapped=c.model, cost=c.cost, run_id=run.run_id, on_call=on_call)
    reserved = fixed_prompt_tokens(c, principal, run.request.message)

    async def load() -> MemoryContext:
        return await c.memory.load_context(
            run.request,
            token_budget=c.settings.planner.context_token_budget,
            reserved_tokens=reserved,
            model=model,
        )

    # One checkpointed unit: a replayed run gets the same context without asking the model to
    # summarise again (and its later steps keep their places in the durable history).
    return await c.checkpoints.step("memory:context", load, _CONTEXT)


def fixed_prompt_tokens(c: Components, principal: Principal, message: str) -> int:
    """Estimated tokens of the planner's prompt without memory: role, tools, rules, request."""
    tools = [spec for spec in c.router.describe_all() if c.gate.may_use(principal, spec)]
    role = getattr(c.planner, "system_prompt", None)  # a custom planner may have no such text
    system = system_text(
        tools,
        max_steps=c.settings.planner.max_steps,
        role=role if isinstance(role, str) else None,
    )
    request = ChatRequest(
        messages=(
            ChatMessage(role="system", content=system),
            ChatMessage(role="user", content=f"Request:\n{message}"),
        )
    )
    return estimate_input_tokens(request)
