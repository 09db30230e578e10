"""Bastion: a production-hardened runtime for LLM agents.

The public names live here; everything else is reachable through its package (`bastion.gate`,
`bastion.cost`, ...). An app is a factory ``(Settings) -> AgentSystem``.
"""

from bastion.clock import Clock, SystemClock
from bastion.cost.interface import CostController
from bastion.errors import (
    AdmissionError,
    BastionError,
    BudgetExceeded,
    CircuitOpen,
    ConfigError,
    ModelError,
    NotAuthenticated,
    PermissionDenied,
    PlanError,
    ToolError,
    TransientToolError,
)
from bastion.evaluator.interface import Evaluator
from bastion.gate.interface import Decision, PermissionsGate, PolicyInput
from bastion.memory.interface import MemoryManager
from bastion.messages import (
    Abort,
    AgentPlan,
    AgentRequest,
    AgentResponse,
    PlanStep,
    Principal,
    RecoveryAction,
    Replan,
    Retry,
    RunEvent,
    RunStatus,
    StepStatus,
    ToolCall,
    ToolOutcome,
    UseFallback,
    Verdict,
)
from bastion.models.interface import ChatModel
from bastion.planner.interface import Planner
from bastion.recovery.interface import RecoveryHandler
from bastion.resilience.breaker import CircuitBreaker
from bastion.router.interface import ToolContext, ToolRouter, ToolSpec
from bastion.router.registry import tool
from bastion.sandbox.interface import ExecutionSandbox
from bastion.settings import Settings, load_settings
from bastion.system import AgentSystem

__all__ = [
    "Abort",
    "AdmissionError",
    "AgentPlan",
    "AgentRequest",
    "AgentResponse",
    "AgentSystem",
    "BastionError",
    "BudgetExceeded",
    "ChatModel",
    "CircuitBreaker",
    "CircuitOpen",
    "Clock",
    "ConfigError",
    "CostController",
    "Decision",
    "Evaluator",
    "ExecutionSandbox",
    "MemoryManager",
    "ModelError",
    "NotAuthenticated",
    "PermissionDenied",
    "PermissionsGate",
    "PlanError",
    "PlanStep",
    "Planner",
    "PolicyInput",
    "Principal",
    "RecoveryAction",
    "RecoveryHandler",
    "Replan",
    "Retry",
    "RunEvent",
    "RunStatus",
    "Settings",
    "StepStatus",
    "SystemClock",
    "ToolCall",
    "ToolContext",
    "ToolError",
    "ToolOutcome",
    "ToolRouter",
    "ToolSpec",
    "TransientToolError",
    "UseFallback",
    "Verdict",
    "load_settings",
    "tool",
]
