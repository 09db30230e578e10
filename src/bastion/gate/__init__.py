"""The Permissions Gate: who is asking, may they make this call, and the audit log of each answer.

`PolicyGate` is the default gate (API keys or app-vouched user ids, principals with scopes and
wildcards, argument policies); `load_principals` reads principals from a JSON or TOML file and
`SqlPrincipalStore` keeps them in the database; `SqlKeyStore` issues and checks API keys;
`InMemoryAuditLog` and `SqlAuditLog` keep the keyed MAC chain of decisions, which `verify` checks
against checkpoints (`bastion.gate.checkpoints`); `Redactor` hides secrets in everything a run
keeps or shows (`RedactingMemory`, `RedactingFilter`); `ApprovalStore` keeps the human approvals
that let a held call go ahead (`Grant`), once, for that call only.
"""

from bastion.gate.approvals import (
    APPROVER_ROLE,
    Approval,
    ApprovalStatus,
    ApprovalStore,
    args_hash,
)
from bastion.gate.audit import (
    GENESIS,
    AuditFilter,
    InMemoryAuditLog,
    SqlAuditLog,
    StoredEntry,
    VerifyReport,
    verify,
)
from bastion.gate.checkpoints import Checkpoint, CheckpointFile, read_checkpoints
from bastion.gate.default import PolicyGate, grants
from bastion.gate.directory import PrincipalStore, SqlPrincipalStore
from bastion.gate.interface import (
    ArgPolicy,
    AuditEntry,
    AuditLog,
    Decision,
    Grant,
    PermissionsGate,
    PolicyInput,
    Stage,
)
from bastion.gate.keys import ApiKey, IssuedKey, KeyStatus, KeyStore, SqlKeyStore
from bastion.gate.principals import load_principals
from bastion.gate.redact import REDACTED, RedactingFilter, Redactor, looks_secret
from bastion.gate.redacting import AuditedCostController, RedactingMemory
from bastion.gate.secret import derive_key, load_server_secret

__all__ = [
    "APPROVER_ROLE",
    "GENESIS",
    "REDACTED",
    "ApiKey",
    "Approval",
    "ApprovalStatus",
    "ApprovalStore",
    "ArgPolicy",
    "AuditEntry",
    "AuditFilter",
    "AuditLog",
    "AuditedCostController",
    "Checkpoint",
    "CheckpointFile",
    "Decision",
    "Grant",
    "InMemoryAuditLog",
    "IssuedKey",
    "KeyStatus",
    "KeyStore",
    "PermissionsGate",
    "PolicyGate",
    "PolicyInput",
    "PrincipalStore",
    "RedactingFilter",
    "RedactingMemory",
    "Redactor",
    "SqlAuditLog",
    "SqlKeyStore",
    "SqlPrincipalStore",
    "Stage",
    "StoredEntry",
    "VerifyReport",
    "args_hash",
    "derive_key",
    "grants",
    "load_principals",
    "load_server_secret",
    "looks_secret",
    "read_checkpoints",
    "verify",
]
