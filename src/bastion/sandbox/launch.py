"""How a worker is started: the `Launcher` of each isolated tier, and the process tier's own.

A launcher turns "run the sandbox child" into a command line and says what the child must set up
itself. The worker then wraps that command so that the very first process joins the call's pids
cgroup before anything can fork (`bastion.sandbox.worker`).

The ``process`` tier (`UnshareLauncher`) uses util-linux ``unshare``: a PID namespace (the child is
its PID 1, so when it goes, everything it started goes), its own ``/proc`` (``/proc/1/environ`` is
the sandbox's, not the host's), and by default a network namespace with nothing in it. The child
then mounts private tmpfs over ``/tmp`` and the other world-writable directories and, when the
runtime is root, runs the tool under an unprivileged uid, so that it cannot write the host's files
nor read root's. (Should the interpreter live where that uid may not enter, ``/root/.pyenv``
say, the child covers that directory with a private tmpfs and binds the interpreter back into it,
read-only: `bastion.sandbox.child.expose_interpreter`.) It does not hide what that uid may read
(world-readable files stay readable): that is the ``os`` tier's job (`bastion.sandbox.bwrap`).

DESIGN.md lists no network isolation for the ``process`` tier; it is on by default here
(``SandboxSettings.process_network`` turns it off) because an unshared network namespace costs
nothing and a tool that needs the network can say so.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any, Protocol

from bastion.sandbox import child
from bastion.settings import SandboxSettings


class Launcher(Protocol):
    """Builds a tier's command line around the sandbox child."""

    #: ``"process"`` or ``"os"``.
    tier: str
    #: Whether the call can reach a network (shapes how network errors are classified).
    network: bool

    def command(self, child_argv: list[str]) -> list[str]:
        """The full command that runs `child_argv` inside the tier's isolation."""
        ...

    def child_config(self) -> dict[str, Any]:
        """What the child must set up itself (private tmpfs, uid to drop to)."""
        ...

    def visible_roots(self) -> tuple[str, ...] | None:
        """The host paths the tool can see, or None when it sees the whole host."""
        ...

    def hidden_roots(self) -> tuple[str, ...]:
        """Host paths the tool sees replaced by private, empty ones."""
        ...


def interpreter() -> str:
    """The real path of this interpreter (venv symlinks resolved)."""
    return os.path.realpath(sys.executable)


def child_path() -> str:
    """The sandbox child's file, run by path."""
    return str(Path(child.__file__).resolve())


def child_argv(control_fd: int) -> list[str]:
    """``python -I -B child.py FD``.

    Isolated mode: no ``PYTHON*`` variables, no user site, no script directory on the path; and
    no ``.pyc`` written anywhere.
    """
    return [interpreter(), "-I", "-B", child_path(), str(control_fd)]


def child_sys_path() -> list[str]:
    """This process's import path, minus entries that do not exist, for the child to use."""
    entries: list[str] = []
    for entry in sys.path:
        path = os.path.abspath(entry or os.curdir)
        if os.path.exists(path) and path not in entries:
            entries.append(path)
    root = str(Path(child.__file__).resolve().parents[2])  # the directory holding `bastion`
    if root not in entries:
        entries.append(root)
    return entries


def find_unshare() -> str | None:
    """util-linux ``unshare``, if installed."""
    return shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")


class UnshareLauncher:
    """The ``process`` tier: own PID namespace, own ``/proc``, no network, unprivileged uid.

    Args:
        settings: The uid/gid to drop to, whether the network is allowed, the workspace size.
        unshare: Path of the ``unshare`` binary.
    """

    tier = "process"

    def __init__(self, *, settings: SandboxSettings, unshare: str) -> None:
        self._settings = settings
        self._unshare = unshare
        self.network = settings.process_network

    def command(self, child_argv: list[str]) -> list[str]:
        argv = [self._unshare, "--pid", "--fork", "--kill-child", "--mount-proc"]
        if not self.network:
            argv.append("--net")
        return [*argv, "--", *child_argv]

    def child_config(self) -> dict[str, Any]:
        drop = None
        if os.geteuid() == 0:
            drop = [self._settings.sandbox_uid, self._settings.sandbox_gid]
        return {
            "private_tmp_bytes": self._settings.limits.workspace_mb * 1024 * 1024,
            "drop_to": drop,
            "expose_interpreter": drop is not None,
        }

    def visible_roots(self) -> tuple[str, ...] | None:
        return None

    def hidden_roots(self) -> tuple[str, ...]:
        return child.PRIVATE_TMPFS
