"""The gate's parts as the settings describe them, built once for the system and for the CLI.

`AgentSystem.from_settings` and the ``bastion keys`` / ``bastion audit`` commands must agree on
the server secret, the derived keys, the database tables and the checkpoint file, or a key made by
the CLI would not open the system and a log written by the system would not verify in the CLI.
This module is where they agree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from bastion.clock import Clock
from bastion.errors import ConfigError
from bastion.gate.audit import SqlAuditLog
from bastion.gate.checkpoints import CHECKPOINT_FILE_NAME
from bastion.gate.directory import SqlPrincipalStore
from bastion.gate.keys import SqlKeyStore
from bastion.gate.principals import load_principals
from bastion.gate.redact import Redactor
from bastion.gate.secret import (
    API_KEYS_PURPOSE,
    AUDIT_PURPOSE,
    CHECKPOINTS_PURPOSE,
    derive_key,
    load_server_secret,
    secret_file,
)
from bastion.messages import Principal
from bastion.settings import Settings


@dataclass(frozen=True, slots=True, kw_only=True)
class GateWiring:
    """The gate's parts, sharing one engine, one secret and one redactor."""

    principals: tuple[Principal, ...]
    audit: SqlAuditLog
    keys: SqlKeyStore
    store: SqlPrincipalStore
    redactor: Redactor
    audit_key: bytes
    checkpoint_file: Path
    #: Seals durable runs' step checkpoints (`bastion.durable.journal`).
    durable_key: bytes


def checkpoint_file(settings: Settings) -> Path:
    """The configured checkpoint file, else ``<data_dir>/audit-checkpoints.jsonl``."""
    return settings.gate.audit_checkpoint_file or settings.data_dir / CHECKPOINT_FILE_NAME


def redactor_for(settings: Settings, *, server_secret: bytes | None = None) -> Redactor:
    """The redactor the settings describe: declared secret fields, and the secrets they hold."""
    known = [] if server_secret is None else [server_secret.decode()]
    for key in (settings.effective_openai_api_key, settings.gate.secret):
        if key is not None:
            known.append(key.get_secret_value())
    return Redactor(secret_fields=settings.gate.secret_fields, known_secrets=known)


def gate_from_settings(
    settings: Settings, *, engine: AsyncEngine, clock: Clock, principals: Iterable[Principal] = ()
) -> GateWiring:
    """Load the server secret and build the key store, principal store, audit log and redactor.

    Args:
        settings: the loaded configuration (its ``gate`` section).
        engine: the database every store shares.
        clock: stamps checkpoints.
        principals: the app's own principals; those of ``gate.principals_file`` are added.

    Raises:
        ConfigError: the secret cannot be had (see `load_server_secret`), the principals file is
            bad, or it declares an id the app declares too.
    """
    gate = settings.gate
    secret = load_server_secret(
        configured=gate.secret, path=secret_file(settings.data_dir, gate.secret_file)
    )
    everyone = list(principals)
    if gate.principals_file is not None:
        from_file = load_principals(gate.principals_file)
        clash = sorted({p.id for p in everyone} & {p.id for p in from_file})
        if clash:
            raise ConfigError(
                f"principals file {gate.principals_file}: {', '.join(map(repr, clash))} are "
                "already declared by the app; declare each principal once"
            )
        everyone.extend(from_file)
    redactor = redactor_for(settings, server_secret=secret)
    audit_key = derive_key(secret, AUDIT_PURPOSE)
    checkpoints = checkpoint_file(settings)
    return GateWiring(
        principals=tuple(everyone),
        audit=SqlAuditLog(
            engine=engine,
            key=audit_key,
            redactor=redactor,
            clock=clock,
            checkpoint_file=checkpoints,
            checkpoint_every=gate.audit_checkpoint_every,
        ),
        keys=SqlKeyStore(engine=engine, key=derive_key(secret, API_KEYS_PURPOSE)),
        store=SqlPrincipalStore(engine=engine),
        redactor=redactor,
        audit_key=audit_key,
        checkpoint_file=checkpoints,
        durable_key=derive_key(secret, CHECKPOINTS_PURPOSE),
    )
