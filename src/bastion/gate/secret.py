"""The server secret: where it comes from, and the keys derived from it.

One secret keys everything the gate must be able to check and nobody else may forge: the HMAC of
each stored API key (`bastion.gate.keys`) and the MAC chain of the audit log
(`bastion.gate.audit`); it also seals durable runs' checkpoints (`bastion.durable.journal`).
Each use gets its own key, derived as ``HMAC-SHA256(secret, purpose)``, so that a value computed
for one purpose is worthless for another.

Where the secret comes from, in order:

1. ``BASTION_GATE__SECRET`` (at least 32 characters): for deployments whose secrets live in a
   secret manager, and for several machines that must share one secret;
2. else the file ``BASTION_GATE__SECRET_FILE`` (default ``<data_dir>/gate.secret``): generated on
   first use (64 random hex digits), written with permissions 0600 and never rewritten.

The secret lives outside the database on purpose: whoever can write the database (a stolen backup,
a SQL injection, a rogue replica) still cannot mint an API key nor rewrite the audit log without
the chain showing it. Keep a copy of the file with your backups, apart from them: without it, the
API keys stop working and the audit log can no longer be verified. Rotating it is not supported
yet (the keys and the log would need re-keying).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from pydantic import SecretStr

from bastion.errors import ConfigError

#: The secret file's name in the data directory, unless the settings name another.
SECRET_FILE_NAME = "gate.secret"
#: The shortest secret accepted, in characters.
MIN_SECRET_CHARS = 32

#: Purposes of the derived keys (changing one invalidates what it keyed).
API_KEYS_PURPOSE = "api-keys/v1"
AUDIT_PURPOSE = "audit-chain/v1"
CHECKPOINTS_PURPOSE = "checkpoints/v1"  # seals durable runs' checkpoints (bastion.durable.journal)


def derive_key(secret: bytes, purpose: str) -> bytes:
    """The 32-byte key for `purpose`: ``HMAC-SHA256(secret, "bastion/" + purpose)``."""
    return hmac.digest(secret, f"bastion/{purpose}".encode(), hashlib.sha256)


def secret_file(data_dir: Path, configured: Path | None = None) -> Path:
    """Where the secret file is: `configured`, else ``<data_dir>/gate.secret``."""
    return configured if configured is not None else data_dir / SECRET_FILE_NAME


def load_server_secret(*, configured: SecretStr | None, path: Path) -> bytes:
    """The server secret: `configured` if given, else the file at `path` (created if missing).

    Raises:
        ConfigError: the configured secret is too short; the file cannot be created or read, is
            readable by other users (group or world permissions), or holds too short a secret.
            The message never contains the secret.
    """
    if configured is not None:
        value = configured.get_secret_value().strip()
        if len(value) < MIN_SECRET_CHARS:
            raise ConfigError(
                f"BASTION_GATE__SECRET is {len(value)} characters long; it must be at least "
                f"{MIN_SECRET_CHARS} (generate one with: python -c 'import secrets; "
                "print(secrets.token_hex(32))')"
            )
        return value.encode()
    if not path.exists():
        _create(path)
    return _read(path)


def _create(path: Path) -> None:
    """Write a fresh secret to `path`, unless another process got there first.

    The secret goes to a private temporary file that is then hard-linked into place: the link
    fails if `path` exists, so two processes starting at once agree on one secret, and nobody ever
    reads a half-written file.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="ascii") as handle:
                handle.write(secrets.token_hex(32) + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            with contextlib.suppress(FileExistsError):
                os.link(temp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
    except OSError as exc:
        raise ConfigError(
            f"cannot create the gate secret file {str(path)!r}: {exc.strerror or exc}; "
            "make its directory writable or set BASTION_GATE__SECRET"
        ) from exc


def _read(path: Path) -> bytes:
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"the gate secret file {str(path)!r} is accessible to other users "
                f"(mode {stat.S_IMODE(mode):04o}); restrict it with: chmod 600 {path}"
            )
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the gate secret file {str(path)!r}: {exc}") from exc
    if len(value) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"the gate secret file {str(path)!r} holds {len(value)} characters; at least "
            f"{MIN_SECRET_CHARS} are needed (delete it to have a new one generated, which "
            "invalidates every API key and the audit log's verification)"
        )
    return value.encode()
