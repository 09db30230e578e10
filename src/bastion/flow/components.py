"""`Components`: the eight components and their shared dependencies, as the flow stages see them.

`AgentSystem` builds one and hands it to each stage (admit, execute, respond); the stages call the
components in order and hold none of their logic (DESIGN.md §1).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.clock import Clock
from bastion.cost.interface import CostController
from bastion.evaluator.interface import Evaluator
from bastion.flow.checkpoints import Checkpoints, InProcess
from bastion.flow.inbox import Inbox
from bastion.flow.respond import AnswerComposer
from bastion.gate.approvals import ApprovalStore
from bastion.gate.interface import PermissionsGate
from bastion.memory.interface import MemoryManager
from bastion.models.interface import ChatModel
from bastion.planner.interface import Planner
from bastion.recovery.interface import RecoveryHandler
from bastion.resilience.limits import Limits
from bastion.router.interface import ToolRouter
from bastion.sandbox.interface import ExecutionSandbox
from bastion.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class Components:
    """Everything a run needs, injected once."""

    gate: PermissionsGate
    cost: CostController
    memory: MemoryManager
    planner: Planner
    router: ToolRouter
    sandbox: ExecutionSandbox
    evaluator: Evaluator
    recovery: RecoveryHandler
    model: ChatModel
    answer: AnswerComposer
    clock: Clock
    settings: Settings
    #: Where a paused run receives a person's decision; None when runs cannot pause.
    inbox: Inbox | None = None
    #: Human approvals of calls a policy holds; None: such calls are denied.
    approvals: ApprovalStore | None = None
    #: How units of work are made durable (in process: they just run).
    checkpoints: Checkpoints = field(default_factory=InProcess)
    #: Per-user and per-app rate limits checked at admission; None: no limits.
    limits: Limits | None = None
