"""The Memory Manager: session history for the planner's context, and run persistence."""

from bastion.memory.context import estimate_tokens, fit_newest
from bastion.memory.default import SqlMemory
from bastion.memory.interface import MemoryContext, MemoryManager, RunRecord, Turn

__all__ = [
    "MemoryContext",
    "MemoryManager",
    "RunRecord",
    "SqlMemory",
    "Turn",
    "estimate_tokens",
    "fit_newest",
]
