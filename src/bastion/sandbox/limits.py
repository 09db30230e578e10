"""`CallLimits`: what one ``process`` or ``os`` call may use, in the units the child applies.

Settings speak in MiB and KiB (`bastion.settings.SandboxLimits`); the child's rlimits and the
runtime's caps speak in bytes. This module is the one conversion, so that both sides read the same
numbers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.settings import SandboxLimits

_MIB = 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class CallLimits:
    """Limits of one call. Sizes in bytes, CPU in whole seconds."""

    #: Address space the tool may add to what the interpreter already maps (``RLIMIT_AS``).
    memory_bytes: int
    #: CPU seconds per process (``RLIMIT_CPU``: SIGXCPU, then SIGKILL one second later).
    cpu_s: int
    #: Open file descriptors per process (``RLIMIT_NOFILE``).
    open_files: int
    #: Largest file a process may write (``RLIMIT_FSIZE``).
    file_bytes: int
    #: Processes and threads in the call's pids cgroup, the sandbox's own included.
    processes: int
    #: Size of the private ``/tmp`` holding the workspace (a tmpfs: memory, not disk).
    workspace_bytes: int
    #: stdout and stderr together; more ends the call as ``resource_exhausted``.
    output_bytes: int
    #: The result's JSON; more ends the call as ``resource_exhausted``.
    result_bytes: int

    @classmethod
    def from_settings(cls, limits: SandboxLimits) -> CallLimits:
        """Convert the settings' MiB/KiB into bytes."""
        return cls(
            memory_bytes=limits.memory_mb * _MIB,
            cpu_s=limits.cpu_s,
            open_files=limits.open_files,
            file_bytes=limits.file_mb * _MIB,
            processes=limits.processes,
            workspace_bytes=limits.workspace_mb * _MIB,
            output_bytes=limits.output_kb * 1024,
            result_bytes=limits.result_kb * 1024,
        )

    def for_child(self) -> dict[str, int]:
        """The rlimits as the child's `apply_limits` reads them."""
        wanted = ("memory_bytes", "cpu_s", "open_files", "file_bytes", "processes")
        return {key: value for key, value in asdict(self).items() if key in wanted}


def mib(value: int) -> str:
    """``67108864`` → ``"64 MiB"``, for messages."""
    return f"{value // _MIB} MiB" if value >= _MIB else f"{value // 1024} KiB"
