"""Launching a stdio MCP server under resource limits.

A stdio server is a long-lived child process, not a call: the ``process`` tier's per-call machinery
(a warm worker per call, a pids cgroup, a private ``/tmp``, CPU seconds per call) does not fit it.
What does fit is applied with rlimits before the server's program starts: its address space
(``memory_mb`` of the server's settings; a whole interpreter lives in it, so the per-call
``sandbox.limits.memory_mb`` would be too small), open files and the largest file it may write
(``sandbox.limits``). CPU seconds are left alone: a server that lives for days accumulates them.
The rlimits are set by a few lines of Python run with ``python -I -c`` that then ``exec`` the
server, so the server keeps that process id and the SDK's stdio client still owns and ends it.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from bastion.settings import McpServerSettings, SandboxLimits

_MIB = 1024 * 1024

# Run before the server: lower each limit (never above the current hard limit), then exec it.
_LAUNCHER = """
import os, resource, sys
for name, value in zip(("RLIMIT_AS", "RLIMIT_NOFILE", "RLIMIT_FSIZE"), map(int, sys.argv[1:4])):
    if value > 0:
        kind = getattr(resource, name)
        hard = resource.getrlimit(kind)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        resource.setrlimit(kind, (value, value))
os.execvp(sys.argv[4], sys.argv[4:])
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerLimits:
    """The rlimits of one stdio server, in bytes and counts; 0 leaves one unlimited."""

    memory_bytes: int
    open_files: int
    file_bytes: int

    @classmethod
    def from_settings(cls, server: McpServerSettings, sandbox: SandboxLimits) -> ServerLimits:
        """The server's own memory limit; open files and file size from the sandbox limits."""
        return cls(
            memory_bytes=server.memory_mb * _MIB,
            open_files=sandbox.open_files,
            file_bytes=sandbox.file_mb * _MIB,
        )


def limited_command(
    command: str, args: list[str], limits: ServerLimits | None
) -> tuple[str, list[str]]:
    """The program and arguments that start `command` under `limits` (unchanged when None)."""
    if limits is None:
        return command, list(args)
    numbers = [str(limits.memory_bytes), str(limits.open_files), str(limits.file_bytes)]
    return sys.executable, ["-I", "-c", _LAUNCHER, *numbers, command, *args]
