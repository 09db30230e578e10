"""Pids cgroups: the process cap that holds as root, and the kill that nothing escapes.

Every ``process`` or ``os`` worker runs in a cgroup of its own whose ``pids.max`` caps the number of
processes and threads it may have. Root ignores ``RLIMIT_NPROC`` and an rlimit on a shared uid
counts every call together; a cgroup counts exactly one call, whoever runs it. The same cgroup is
how the call ends: `Cgroup.kill_all` SIGKILLs every process listed in it until none is left, so a
``setsid``/double-forked daemon dies with the rest (it cannot leave a cgroup it may not write to).
``pids.events`` says whether the cap was hit, which turns a fork bomb's timeout into
``resource_exhausted``.

Both hierarchies are supported: cgroup v2 with the ``pids`` controller (``cgroup.kill`` when the
kernel has it), and the v1 ``pids`` hierarchy. Our cgroups live under one directory per sandbox,
``bastion-<pid>-<random>``, beside the runtime's own cgroup (v1) or at the v2 root (where the
no-internal-processes rule allows controllers); directories left by a runtime that died are removed
the next time a sandbox starts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bastion.clock import Clock

logger = logging.getLogger(__name__)

_OURS = re.compile(r"^bastion-(\d+)-[0-9a-f]+$")
#: How long `Cgroup.destroy` waits for killed processes to leave before giving up on the rmdir.
DESTROY_WAIT_S = 2.0


class CgroupUnavailable(Exception):
    """No writable pids cgroup hierarchy: the message says what is missing."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PidsHierarchy:
    """Where our cgroups can be made: the directory under which each sandbox makes its own."""

    version: Literal[1, 2]
    base: Path

    def describe(self) -> str:
        """E.g. ``"cgroup v1 pids at /sys/fs/cgroup/pids"``."""
        return f"cgroup v{self.version} pids at {self.base}"


def find_pids_hierarchy(
    mountinfo: str | None = None, self_cgroup: str | None = None
) -> PidsHierarchy:
    """Locate a pids hierarchy this process can write to.

    Args:
        mountinfo: ``/proc/self/mountinfo`` text (read when None; tests pass their own).
        self_cgroup: ``/proc/self/cgroup`` text (likewise).

    Raises:
        CgroupUnavailable: none is mounted, or it is not writable by this process.
    """
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    if self_cgroup is None:
        self_cgroup = _read("/proc/self/cgroup")
    v1_mount, v2_mount = _cgroup_mounts(mountinfo)
    problems: list[str] = []
    if v2_mount is not None:
        controllers = _read_or_empty(v2_mount / "cgroup.controllers").split()
        if "pids" in controllers:
            if os.access(v2_mount, os.W_OK):
                return PidsHierarchy(version=2, base=v2_mount)
            problems.append(f"the cgroup v2 root {v2_mount} is not writable (not root?)")
    if v1_mount is not None:
        relative = "/"
        for line in self_cgroup.splitlines():
            parts = line.split(":", 2)
            if len(parts) == 3 and "pids" in parts[1].split(","):
                relative = parts[2]
        base = v1_mount / relative.lstrip("/")
        if os.access(base, os.W_OK):
            return PidsHierarchy(version=1, base=base)
        problems.append(f"the cgroup v1 pids directory {base} is not writable (not root?)")
    if not problems:
        problems.append("no cgroup hierarchy with the pids controller is mounted")
    raise CgroupUnavailable("; ".join(problems))


def _cgroup_mounts(mountinfo: str) -> tuple[Path | None, Path | None]:
    """The v1 ``pids`` mount point and the (first) v2 mount point, from mountinfo."""
    v1_mount: Path | None = None
    v2_mount: Path | None = None
    for line in mountinfo.splitlines():
        pre, _, post = line.partition(" - ")
        fields, post_fields = pre.split(), post.split()
        if len(fields) < 5 or len(post_fields) < 3:
            continue
        fstype, options = post_fields[0], post_fields[2].split(",")
        if fstype == "cgroup" and "pids" in options:
            v1_mount = Path(fields[4])
        elif fstype == "cgroup2" and v2_mount is None:
            v2_mount = Path(fields[4])
    return v1_mount, v2_mount


def _read(path: str | Path) -> str:
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def _read_or_empty(path: Path) -> str:
    try:
        return _read(path)
    except OSError:
        return ""


class Cgroup:
    """One worker's cgroup: its process cap, its kill switch, and whether the cap was hit."""

    def __init__(self, path: Path, version: Literal[1, 2]) -> None:
        self.path = path
        self._version = version

    @property
    def procs_file(self) -> Path:
        """Writing ``0`` here moves the writing process in (the launch wrapper does)."""
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        """The processes in the cgroup now (empty once it is gone)."""
        try:
            text = _read(self.procs_file)
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def cap_hits(self) -> int:
        """How many forks the cap refused (``pids.events``'s ``max``)."""
        for line in _read_or_empty(self.path / "pids.events").splitlines():
            key, _, value = line.partition(" ")
            if key == "max" and value.strip().isdigit():
                return int(value)
        return 0

    def kill_all(self) -> int:
        """SIGKILL everything in the cgroup; returns how many processes were signalled.

        One pass is enough for processes that exist; a fork in flight shows up in the next read,
        so the caller (`destroy`) repeats until the cgroup is empty.
        """
        if self._version == 2:
            with contextlib.suppress(OSError):
                (self.path / "cgroup.kill").write_text("1")
        killed = 0
        for pid in self.pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed += 1
        return killed

    def kill_until_empty(self, rounds: int = 100_000) -> bool:
        """`kill_all` until the cgroup is empty, synchronously (finalizers, interpreter exit).

        Killed processes leave within milliseconds; this polls ``cgroup.procs`` meanwhile,
        yielding the CPU between reads, and gives up after `rounds` reads.
        """
        for _ in range(rounds):
            self.kill_all()
            if not self.pids():
                return True
            os.sched_yield()
        return False

    async def destroy(self, clock: Clock) -> bool:
        """Kill until empty, then remove the directory. Returns False if it would not empty."""
        deadline = clock.monotonic() + DESTROY_WAIT_S
        while True:
            self.kill_all()
            if not self.pids():
                break
            if clock.monotonic() >= deadline:
                logger.error(
                    "sandbox cgroup %s still holds processes %s after SIGKILL; left in place",
                    self.path,
                    self.pids(),
                )
                return False
            await clock.sleep(0.002)
        return self.remove()

    def remove(self) -> bool:
        """Rmdir the cgroup; False if it still has processes (or is gone already)."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


class CgroupTree:
    """The cgroups of one sandbox, under ``<base>/bastion-<pid>-<random>``.

    Args:
        hierarchy: Where to make them (`find_pids_hierarchy`).
    """

    def __init__(self, hierarchy: PidsHierarchy) -> None:
        self._hierarchy = hierarchy
        self._counter = 0
        remove_stale(hierarchy)
        self.root = hierarchy.base / f"bastion-{os.getpid()}-{secrets.token_hex(4)}"
        self.root.mkdir(mode=0o755)
        if hierarchy.version == 2:
            # Controllers must be enabled on a parent for its children to have pids.max.
            _enable_pids(hierarchy.base)
            _enable_pids(self.root)

    def create(self, *, max_pids: int) -> Cgroup:
        """A new, empty cgroup whose processes may number at most `max_pids`."""
        self._counter += 1
        path = self.root / f"w{self._counter}"
        path.mkdir(mode=0o755)
        (path / "pids.max").write_text(str(max_pids))
        return Cgroup(path, self._hierarchy.version)

    def remove(self) -> None:
        """Remove the (empty) tree; children still holding processes are killed first."""
        _remove_tree(self.root, self._hierarchy.version)


def _enable_pids(directory: Path) -> None:
    control = directory / "cgroup.subtree_control"
    if "pids" not in _read_or_empty(control).split():
        control.write_text("+pids")


def _remove_tree(root: Path, version: Literal[1, 2]) -> None:
    with contextlib.suppress(OSError):
        for child in root.iterdir():
            if child.is_dir():
                group = Cgroup(child, version)
                group.kill_until_empty()
                group.remove()
    with contextlib.suppress(OSError):
        root.rmdir()


def remove_stale(hierarchy: PidsHierarchy) -> None:
    """Remove the trees of sandboxes whose runtime process is gone (killed, crashed)."""
    try:
        entries = list(hierarchy.base.iterdir())
    except OSError:
        return
    for entry in entries:
        match = _OURS.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        _remove_tree(entry, hierarchy.version)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def probe(hierarchy: PidsHierarchy) -> None:
    """Make and remove a cgroup with a pids cap, proving the hierarchy is usable.

    Raises:
        CgroupUnavailable: naming what failed.
    """
    try:
        tree = CgroupTree(hierarchy)
    except OSError as exc:
        raise CgroupUnavailable(f"cannot create a cgroup under {hierarchy.base}: {exc}") from exc
    try:
        group = tree.create(max_pids=8)
        group.remove()
    except OSError as exc:
        raise CgroupUnavailable(f"cannot set pids.max under {tree.root}: {exc}") from exc
    finally:
        tree.remove()
