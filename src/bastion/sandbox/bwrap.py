"""The ``os`` tier's launcher: the sandbox child inside bubblewrap, seeing almost nothing.

The tool gets its own PID, IPC, UTS, mount and network namespaces (no network at all), runs in a
new session (``--new-session``: no ``TIOCSTI`` into the runtime's terminal) and dies with its parent
(``--die-with-parent``). When the runtime is root, the tool runs as the unprivileged sandbox user
with no capability (see `BwrapLauncher` for how, and why not through a user namespace).

The filesystem is a read-only tmpfs root holding read-only binds of only what the interpreter
needs: the Python installation (its prefix, or just its standard library and binary when that
prefix is ``/usr``), every directory on the import path, ``/usr/lib`` (shared libraries), a fresh
``/proc`` and a minimal read-only ``/dev``. The one writable place is a private ``/tmp`` of
``workspace_mb`` (a tmpfs: filling it fills nothing on the host), holding the workspace.

bubblewrap itself is started with a scrubbed environment (the worker passes a fixed, minimal one),
because the sandbox's PID 1 is a bubblewrap process and anyone inside can read its environment and
argv through ``/proc/1``: only paths are ever on its command line.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from typing import Any

from bastion.sandbox.launch import child_sys_path, interpreter
from bastion.settings import SandboxSettings

#: Prefixes too broad to bind whole: bind the interpreter's own files inside them instead.
_SYSTEM_PREFIXES = frozenset({"/", "/usr", "/usr/local"})


def find_bwrap() -> str | None:
    """The ``bwrap`` binary, if bubblewrap is installed."""
    return shutil.which("bwrap", path="/usr/bin:/bin:/usr/local/bin:/usr/sbin:/sbin")


def interpreter_paths() -> list[str]:
    """What the interpreter needs to start: its prefix, or its binary and standard library."""
    prefix = os.path.realpath(sys.base_prefix)
    if prefix not in _SYSTEM_PREFIXES:
        return [prefix]
    paths = [interpreter()]
    for key in ("stdlib", "platstdlib"):
        path = sysconfig.get_path(key)
        if path:
            paths.append(os.path.realpath(path))
    libdir = sysconfig.get_config_var("LIBDIR")
    if isinstance(libdir, str) and libdir:
        paths.append(os.path.realpath(libdir))
    return paths


def _collapse(paths: list[str]) -> list[str]:
    """Drop paths inside another one of the list, and the root itself; keep order."""
    kept: list[str] = []
    for path in sorted(set(paths), key=lambda p: (len(p), p)):
        if path == "/" or any(path == k or path.startswith(k.rstrip("/") + "/") for k in kept):
            continue
        kept.append(path)
    return kept


class BwrapLauncher:
    """The ``os`` tier: bubblewrap with read-only binds of the interpreter and import path only.

    When the runtime is root, bubblewrap runs privileged, without a user namespace: a namespace
    mapping the sandbox's root to the host's would leave the tool owning every root-owned file it
    can reach, ``/proc/sys`` included (``kernel.core_pattern`` is one write away from the host),
    capabilities dropped or not. Instead every capability is dropped but the three the child needs
    to hand the tool an unprivileged uid (``CAP_SETUID``, ``CAP_SETGID``, ``CAP_CHOWN`` for the
    workspace): the tool process then runs as the sandbox user, with no capability at all, exactly
    as on the ``process`` tier. The directories leading to each bind are made world-traversable
    in the sandbox (``--perms 0755 --dir``) so that this user reaches an interpreter that lives
    where it may not on the host (``/root/.pyenv``).

    When the runtime is not root, bubblewrap makes a user namespace as usual and the tool runs as
    the runtime's own user.

    Args:
        settings: The workspace size and the sandbox user.
        bwrap: Path of the ``bwrap`` binary.
    """

    tier = "os"
    network = False

    def __init__(self, *, settings: SandboxSettings, bwrap: str) -> None:
        self._settings = settings
        self._bwrap = bwrap
        system = [p for p in ("/usr/lib", "/usr/lib64") if os.path.isdir(p)]
        self._binds = _collapse([*system, *interpreter_paths(), *child_sys_path()])
        for link in ("/lib", "/lib64"):
            if os.path.isdir(link) and not os.path.islink(link) and link not in self._binds:
                self._binds.append(link)

    def binds(self) -> list[str]:
        """The host paths bound read-only into the sandbox."""
        return list(self._binds)

    def command(self, child_argv: list[str]) -> list[str]:
        argv = [self._bwrap]
        if os.geteuid() == 0:
            argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
            argv += ["--unshare-cgroup-try", "--cap-drop", "ALL"]
            for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_CHOWN"):
                argv += ["--cap-add", cap]
        else:
            argv += ["--unshare-all", "--unshare-user", "--disable-userns"]
        argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox"]
        # The private /tmp first: binds of code that lives under the host's /tmp (a checkout in
        # /tmp, its venv) then land on top of it instead of being hidden by it.
        workspace = str(self._settings.limits.workspace_mb * 1024 * 1024)
        argv += ["--size", workspace, "--tmpfs", "/tmp"]
        made: set[str] = {"/tmp"}
        for path in self._binds:
            for ancestor in _ancestors(path):
                if ancestor not in made:
                    made.add(ancestor)
                    argv += ["--perms", "0755", "--dir", ancestor]
            argv += ["--ro-bind", path, path]
        for link in ("/lib", "/lib64"):
            if os.path.islink(link):
                argv += ["--symlink", os.readlink(link), link]
        argv += ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev"]
        argv += ["--remount-ro", "/", "--chdir", "/tmp"]
        return [*argv, "--", *child_argv]

    def child_config(self) -> dict[str, Any]:
        drop = None
        if os.geteuid() == 0:
            drop = [self._settings.sandbox_uid, self._settings.sandbox_gid]
        return {"private_tmp_bytes": 0, "drop_to": drop, "expose_interpreter": False}

    def visible_roots(self) -> tuple[str, ...] | None:
        return (*self._binds, "/proc", "/dev", "/lib", "/lib64")

    def hidden_roots(self) -> tuple[str, ...]:
        return ("/tmp",)  # the sandbox's own tmpfs: the host's /tmp is not there


def _ancestors(path: str) -> list[str]:
    """``/a/b/c`` → ``["/a", "/a/b"]``."""
    parts = path.strip("/").split("/")[:-1]
    return ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]
