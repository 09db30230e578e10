"""Audit checkpoints: the log's size and head, kept by the operator outside the database.

A MAC chain proves that no entry was edited, forged, deleted from the middle or moved; it cannot
prove that nothing was cut from the END, nor that the whole log was not replaced by an older copy
of itself, since a prefix of a valid chain is a valid chain. A checkpoint closes that gap: it
records that at time ``at`` the log held ``size`` entries whose last MAC was ``head``. A log
shorter than a checkpoint lost its tail; a log whose entry ``size - 1`` has another MAC was
rewritten or rolled back (`bastion.gate.audit.verify` says which entry first went wrong).

Checkpoints are appended to a JSON Lines file, one object per line, each with its own MAC (keyed
like the chain) so that a checkpoint cannot be forged either. Appends are single ``write`` calls
on a file opened with ``O_APPEND`` and synced, so two processes can append at once; a process
killed mid-write can leave at most one torn last line, which `read_checkpoints` reports and skips.
The file is only useful where an intruder into the database cannot reach it: ship it off the
machine (a log shipper, a backup, a mail to the auditors).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bastion.errors import ConfigError

#: The checkpoint file's name in the data directory, unless the settings name another.
CHECKPOINT_FILE_NAME = "audit-checkpoints.jsonl"


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """At `at`, the log held `size` entries and the MAC of the last one was `head`."""

    size: int
    head: str
    at: datetime
    mac: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckpointFile:
    """What a checkpoint file holds: its valid checkpoints, and what was wrong with the rest."""

    path: Path
    checkpoints: tuple[Checkpoint, ...]
    #: One line per bad line: forged (bad MAC) or malformed. Each is a failed verification.
    problems: tuple[str, ...] = ()
    #: A last line cut short by a crash mid-write: harmless, reported for the record.
    torn_tail: bool = False


def _mac(key: bytes, size: int, head: str, at: str) -> str:
    message = f"bastion-audit-checkpoint\n{size}\n{head}\n{at}".encode()
    return hmac.digest(key, message, hashlib.sha256).hex()


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def make_checkpoint(key: bytes, *, size: int, head: str, at: datetime) -> Checkpoint:
    """A checkpoint of a log of `size` entries ending in `head`, taken at `at` (aware)."""
    return Checkpoint(size=size, head=head, at=at, mac=_mac(key, size, head, _iso(at)))


def checkpoint_line(checkpoint: Checkpoint) -> str:
    """The checkpoint as one line of JSON, newline included."""
    body = {
        "size": checkpoint.size,
        "head": checkpoint.head,
        "at": _iso(checkpoint.at),
        "mac": checkpoint.mac,
    }
    return json.dumps(body, separators=(",", ":")) + "\n"


def append_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Append `checkpoint` to the file at `path` (created 0600 if missing), synced to disk.

    Blocking: call it from a worker thread in async code.

    Raises:
        OSError: the file cannot be written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, checkpoint_line(checkpoint).encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def read_checkpoints(path: Path, *, key: bytes) -> CheckpointFile:
    """The checkpoints in the file at `path`, each checked against its MAC.

    Raises:
        ConfigError: the file is missing or unreadable.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the checkpoint file {str(path)!r}: {exc.strerror or exc}"
        ) from exc
    lines = raw.split(b"\n")
    torn = bool(lines[-1])  # text after the last newline: a write cut short
    checkpoints: list[Checkpoint] = []
    problems: list[str] = []
    for number, line in enumerate(lines[:-1], start=1):
        if not line.strip():
            continue
        parsed = _parse(line)
        if parsed is None:
            problems.append(f"{path}:{number}: not a checkpoint (malformed line)")
        elif not hmac.compare_digest(
            parsed.mac, _mac(key, parsed.size, parsed.head, _iso(parsed.at))
        ):
            problems.append(
                f"{path}:{number}: checkpoint of size {parsed.size} has a bad MAC (the line was "
                "edited or forged, or the gate secret is not the one that wrote it)"
            )
        else:
            checkpoints.append(parsed)
    return CheckpointFile(
        path=path, checkpoints=tuple(checkpoints), problems=tuple(problems), torn_tail=torn
    )


def _parse(line: bytes) -> Checkpoint | None:
    try:
        data = json.loads(line)
        size, head, at, mac = data["size"], data["head"], data["at"], data["mac"]
        if not (isinstance(size, int) and size > 0 and isinstance(head, str)):
            return None
        if not (isinstance(at, str) and isinstance(mac, str)):
            return None
        when = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        return None
    if when.tzinfo is None:
        return None
    return Checkpoint(size=size, head=head, at=when, mac=mac)
