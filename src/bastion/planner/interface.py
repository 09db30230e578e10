"""The Planner's contract: turn a request, its context and the caller's tools into a plan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bastion.memory.interface import MemoryContext
from bastion.messages import AgentPlan, AgentRequest, StepRecord
from bastion.models.interface import ChatModel
from bastion.router.interface import ToolSpec


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanningContext:
    """Everything the planner may use for one (re)plan."""

    request: AgentRequest
    #: Only the tools this caller may use: the plan schema is built from these, nothing else.
    tools: tuple[ToolSpec, ...]
    memory: MemoryContext
    #: What has happened so far in this run (empty for the first plan).
    history: tuple[StepRecord, ...] = ()
    #: Why a replan is asked for (a failed step, a failed evaluation, a denial).
    feedback: str | None = None
    #: The revision number the new plan will carry.
    revision: int = 0


class Planner(Protocol):
    """Asks `model` for a plan that validates against a schema built from ``context.tools``.

    Returns a plan whose every step names one of ``context.tools`` with args valid for it. On a
    replan (``context.history`` non-empty) the returned steps are the *remaining* steps; their
    ``step_id``s continue after the last one in the history.

    Raises:
        PlanError: no valid plan within the repair budget (the message says what was wrong).
        ModelError: the provider failed (left to the Recovery Handler to retry or abort).
    """

    async def plan(self, context: PlanningContext, *, model: ChatModel) -> AgentPlan: ...
