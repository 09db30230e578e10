"""The Memory Manager: sessions, runs and long-term facts; the planner's context within a budget."""

from bastion.memory.context import estimate_tokens, fit_newest
from bastion.memory.default import SqlMemory
from bastion.memory.embedding import Embedder, EmbeddingFacts, HashingEmbedder
from bastion.memory.facts import Fact, FactStore
from bastion.memory.fts import SqlFacts
from bastion.memory.interface import ForgetReport, MemoryContext, MemoryManager, RunRecord, Turn
from bastion.memory.tools import MemoryTools

__all__ = [
    "Embedder",
    "EmbeddingFacts",
    "Fact",
    "FactStore",
    "ForgetReport",
    "HashingEmbedder",
    "MemoryContext",
    "MemoryManager",
    "MemoryTools",
    "RunRecord",
    "SqlFacts",
    "SqlMemory",
    "Turn",
    "estimate_tokens",
    "fit_newest",
]
