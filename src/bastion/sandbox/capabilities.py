"""Which isolation tiers this machine can give, and why not: for ``bastion doctor`` and tools.

A tier is available only when every guarantee it makes can be kept here; a tool asking for one that
is not fails to register with the reasons (`require_tier`), and never runs on a weaker tier.

* ``inline``: always.
* ``process``: Linux; root (for the PID namespace, the pids cgroup and the drop to an unprivileged
  uid); util-linux ``unshare`` able to make PID, mount and network namespaces; a writable pids
  cgroup hierarchy.
* ``os``: Linux; a writable pids cgroup hierarchy; bubblewrap installed and able to start the
  interpreter in its sandbox (as root; otherwise unprivileged user namespaces must be allowed).

Each check is a real attempt (a namespace made, a cgroup created and removed, the interpreter
started inside bubblewrap), not a guess from version numbers. The result is a fact about the
machine, so `machine_capabilities` probes once per process and caches it (a module-level cache, on
purpose, like ``os.cpu_count``: registration has nothing to inject it through).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

from bastion.errors import ConfigError
from bastion.router.interface import SandboxTier
from bastion.sandbox.cgroups import CgroupUnavailable, PidsHierarchy, find_pids_hierarchy, probe
from bastion.sandbox.launch import find_unshare, interpreter
from bastion.settings import SandboxSettings

_PROBE_TIMEOUT_S = 20.0
_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True, slots=True, kw_only=True)
class TierSupport:
    """Whether one tier works here: if not, why; if so, how."""

    tier: SandboxTier
    available: bool
    #: Why the tier is unavailable (empty when it is available).
    reasons: tuple[str, ...] = ()
    #: How the tier isolates on this machine (empty when it is unavailable).
    details: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Capabilities:
    """Every tier's support, and what was found on the way."""

    inline: TierSupport
    process: TierSupport
    os: TierSupport
    hierarchy: PidsHierarchy | None = None
    unshare: str | None = None
    bwrap: str | None = None

    def support(self, tier: SandboxTier) -> TierSupport:
        """The support of `tier`."""
        match tier:
            case "inline":
                return self.inline
            case "process":
                return self.process
            case "os":
                return self.os


def _run(argv: list[str]) -> tuple[int, str]:
    try:
        done = subprocess.run(
            argv,
            env=_ENV,
            cwd="/",
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return -1, str(exc)
    text = (done.stderr or done.stdout).decode(errors="replace").strip()
    return done.returncode, text[-300:]


def probe_capabilities() -> Capabilities:
    """Try each tier's mechanisms on this machine, now."""
    from bastion.sandbox.bwrap import BwrapLauncher, find_bwrap

    inline = TierSupport(tier="inline", available=True, details=("in the runtime's event loop",))
    if not sys.platform.startswith("linux"):
        reason = (f"the process and os tiers need Linux (this is {sys.platform})",)
        return Capabilities(
            inline=inline,
            process=TierSupport(tier="process", available=False, reasons=reason),
            os=TierSupport(tier="os", available=False, reasons=reason),
        )
    shared: list[str] = []
    hierarchy: PidsHierarchy | None = None
    try:
        hierarchy = find_pids_hierarchy()
        probe(hierarchy)
    except CgroupUnavailable as exc:
        shared.append(f"no usable pids cgroup, which caps the processes of a call: {exc}")
        hierarchy = None
    except OSError as exc:
        shared.append(f"cannot read the cgroup mounts: {exc}")
        hierarchy = None
    cgroup_detail = (f"process cap: {hierarchy.describe()}",) if hierarchy else ()

    process_reasons = list(shared)
    unshare = find_unshare()
    if os.geteuid() != 0:
        process_reasons.append(
            f"the runtime is not root (uid {os.geteuid()}): the process tier needs root for its "
            "PID namespace and pids cgroup and to run tools as an unprivileged user"
        )
    elif unshare is None:
        process_reasons.append("util-linux 'unshare' is not installed")
    else:
        code, text = _run(
            [unshare, "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "/bin/true"]
        )
        if code != 0:
            process_reasons.append(f"'unshare' cannot create PID/mount/network namespaces: {text}")
    process = _support(
        "process",
        process_reasons,
        (
            "PID, mount and network namespaces (util-linux unshare)",
            *cgroup_detail,
            "tools run as an unprivileged uid",
        ),
    )

    os_reasons = list(shared)
    bwrap = find_bwrap()
    if bwrap is None:
        os_reasons.append(
            "bubblewrap is not installed: apt-get install -y bubblewrap (or make install-bwrap)"
        )
    else:
        launcher = BwrapLauncher(settings=SandboxSettings(), bwrap=bwrap)
        code, text = _run(launcher.command([interpreter(), "-I", "-c", "pass"]))
        if code != 0:
            hint = ""
            if "namespace" in text.lower() or "permission" in text.lower():
                hint = " (are unprivileged user namespaces disabled? see bastion doctor)"
            os_reasons.append(f"bubblewrap cannot start the interpreter: {text}{hint}")
    os_tier = _support(
        "os",
        os_reasons,
        (
            f"bubblewrap ({bwrap}), no network, read-only binds of the interpreter",
            "tools run as an unprivileged uid" if os.geteuid() == 0 else "tools run as you",
            *cgroup_detail,
        ),
    )
    return Capabilities(
        inline=inline,
        process=process,
        os=os_tier,
        hierarchy=hierarchy,
        unshare=unshare,
        bwrap=bwrap,
    )


def _support(tier: SandboxTier, reasons: list[str], details: tuple[str, ...]) -> TierSupport:
    if reasons:
        return TierSupport(tier=tier, available=False, reasons=tuple(reasons))
    return TierSupport(tier=tier, available=True, details=details)


@functools.cache
def machine_capabilities() -> Capabilities:
    """`probe_capabilities`, once per process."""
    return probe_capabilities()


def unavailable_message(support: TierSupport, *, tool: str | None = None) -> str:
    """One line: which tier is missing, for whom, why, and what to do."""
    who = f"tool {tool!r} asks for" if tool else "settings ask for"
    return (
        f"{who} sandbox tier {support.tier!r}, which this machine cannot provide: "
        f"{'; '.join(support.reasons)}. Run 'bastion doctor' for details; a tool never runs on "
        "a weaker tier than it asks for"
    )


def require_tier(tier: SandboxTier, *, tool: str, fn: Any) -> None:
    """Check, at registration, that `tier` works here and that `fn` can run in a child.

    Raises:
        ConfigError: the tier is unavailable (with the reasons), or `fn` cannot be imported by
            name in a child process.
    """
    if tier == "inline":
        return
    from bastion.sandbox.process import entry_point

    support = machine_capabilities().support(tier)
    if not support.available:
        raise ConfigError(unavailable_message(support, tool=tool))
    entry_point(fn, tool=tool, verify=False)
