"""The Permissions Gate: who is asking, may they make this call, and the audit log of each answer.

`PolicyGate` is the default gate (principals, scopes with wildcards, argument policies);
`load_principals` reads principals from a JSON or TOML file; `InMemoryAuditLog` and `SqlAuditLog`
keep the hash-chained audit log, which `verify` checks.
"""

from bastion.gate.audit import (
    GENESIS_HASH,
    ChainedEntry,
    InMemoryAuditLog,
    SqlAuditLog,
    redact,
    verify,
)
from bastion.gate.default import PolicyGate, grants
from bastion.gate.interface import (
    ArgPolicy,
    AuditEntry,
    AuditLog,
    Decision,
    PermissionsGate,
    PolicyInput,
    Stage,
)
from bastion.gate.principals import load_principals

__all__ = [
    "GENESIS_HASH",
    "ArgPolicy",
    "AuditEntry",
    "AuditLog",
    "ChainedEntry",
    "Decision",
    "InMemoryAuditLog",
    "PermissionsGate",
    "PolicyGate",
    "PolicyInput",
    "SqlAuditLog",
    "Stage",
    "grants",
    "load_principals",
    "redact",
    "verify",
]
