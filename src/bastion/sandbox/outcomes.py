"""How an isolated call's end becomes a `ToolOutcome`: the classification, in one place.

========================  =====================================================================
``timeout``               the time limit passed; the tree was killed (transient: may be retried)
``resource_exhausted``    memory (``MemoryError``), CPU seconds (the tool used its ``RLIMIT_CPU``),
                          processes (the pids cgroup refused a fork), open files, file size, a full
                          workspace, too much output, too large a result. Never retried.
``crashed``               the tool's process died without an answer: a signal (SIGSEGV, SIGABRT,
                          SIGKILL...), ``os._exit``, or the worker itself died
``denied``                the sandbox refused an operation: a permission or read-only error, any
                          network use on a tier without network, a path outside the ``os`` sandbox
``tool_error``            the tool raised anything else, or could not be loaded in the sandbox
``transient``             the tool raised `TransientToolError`
========================  =====================================================================

The child reports an exception by its class names (the whole MRO, and its cause's) and errno, so
that nothing here has to import what the tool imported. A fork bomb shows up as whatever the tool
did when its forks failed (an ``EAGAIN``, a timeout, a crash); ``pids.events`` says the cap was hit,
and that wins, since the cause is the same.
"""

from __future__ import annotations

import errno
import logging
import posixpath
import signal
from dataclasses import dataclass
from typing import Any

from bastion.messages import ToolErrorKind, ToolOutcome
from bastion.router.interface import ToolSpec
from bastion.sandbox.child import WORKSPACE
from bastion.sandbox.inline import MAX_ERROR_CHARS, outcome_from_value
from bastion.sandbox.limits import CallLimits, mib
from bastion.sandbox.worker import CallEnd

logger = logging.getLogger(__name__)

_NETWORK_ERRNOS = frozenset(
    {
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EHOSTUNREACH,
        errno.ECONNREFUSED,
        errno.EADDRNOTAVAIL,
    }
)
_REFUSED_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})


@dataclass(frozen=True, slots=True, kw_only=True)
class CallContext:
    """What the classification needs to know about the call besides how it ended."""

    spec: ToolSpec
    tier: str
    limits: CallLimits
    limit_s: float
    duration_s: float
    #: Whether the tier gives the tool a network (network errors are denials when it does not).
    network: bool
    #: The host paths the tool can see, or None when it sees the whole host.
    visible_roots: tuple[str, ...] | None
    #: Host paths the tier hides behind private mounts (a missing file there is a refusal).
    hidden_roots: tuple[str, ...] = ()


def classify(end: CallEnd, ctx: CallContext) -> ToolOutcome:
    """The outcome of a call that ended as `end`."""
    tool, tier = ctx.spec.name, ctx.tier
    if end.how == "frame" and end.frame is not None and end.frame.get("kind") == "result":
        return outcome_from_value(ctx.spec, end.frame.get("value"), duration_s=ctx.duration_s)
    if end.cap_hits and end.how != "output_flood":
        return _exhausted(
            ctx, f"tool {tool!r} tried to run more than {ctx.limits.processes} processes"
        )
    match end.how:
        case "output_flood":
            return _exhausted(
                ctx,
                f"tool {tool!r} wrote more than {mib(ctx.limits.output_bytes)} to stdout/stderr "
                "and was stopped",
            )
        case "frame_too_large":
            return _exhausted(
                ctx, f"tool {tool!r} returned more than {mib(ctx.limits.result_bytes)} of JSON"
            )
        case "timeout":
            return ToolOutcome.failure(
                ToolErrorKind.TIMEOUT,
                f"tool {tool!r} timed out after {round(ctx.limit_s, 3)}s on the {tier} tier; it "
                "was killed with every process it started",
                duration_s=ctx.duration_s,
                transient=True,
            )
        case "lost":
            return _crashed(
                ctx,
                f"the {tier} sandbox of tool {tool!r} died without an answer "
                f"(status {end.returncode}){_tail(end)}",
            )
        case "frame":
            pass
    frame = end.frame or {}
    kind = frame.get("kind")
    if kind == "error":
        return _from_error(frame, ctx, end)
    if kind == "exit":
        return _from_exit(frame, ctx, end)
    return _crashed(ctx, f"the {tier} sandbox of tool {tool!r} sent a {kind!r} frame{_tail(end)}")


def _from_error(frame: dict[str, Any], ctx: CallContext, end: CallEnd) -> ToolOutcome:
    tool, tier, limits = ctx.spec.name, ctx.tier, ctx.limits
    classes = {str(name) for name in frame.get("classes") or ()}
    code = frame.get("errno")
    text = f"{str(frame.get('type', 'Exception')).rsplit('.', 1)[-1]}: {frame.get('message', '')}"
    logger.info(
        "tool %r raised on the %s tier: %s\n%s", tool, tier, text, frame.get("traceback", "")
    )
    if frame.get("load_error"):
        return _failure(
            ToolErrorKind.TOOL_ERROR,
            ctx,
            f"tool {tool!r} could not be loaded in the {tier} "
            f"sandbox ({text}); a tool on this tier must be a module-level function",
        )
    if any(name.endswith(("ResultTooLarge", "OutputTooLarge")) for name in classes):
        return _exhausted(ctx, f"tool {tool!r}: {frame.get('message')}")
    if "MemoryError" in classes:
        return _exhausted(
            ctx, f"tool {tool!r} ran out of memory (it may use {mib(limits.memory_bytes)})"
        )
    exhausted = _exhausted_errno(code, limits)
    if exhausted is not None:
        return _exhausted(ctx, f"tool {tool!r}: {exhausted} ({text})")
    if not ctx.network and (
        any(name.endswith("gaierror") for name in classes) or code in _NETWORK_ERRNOS
    ):
        return _failure(
            ToolErrorKind.DENIED,
            ctx,
            f"tool {tool!r} tried to use the network, which the "
            f"{tier} tier does not give it ({text})",
        )
    if code in _REFUSED_ERRNOS or "PermissionError" in classes:
        return _failure(
            ToolErrorKind.DENIED, ctx, f"the {tier} sandbox refused tool {tool!r}: {text}"
        )
    filename = frame.get("filename")
    if code == errno.ENOENT and isinstance(filename, str) and _outside(filename, ctx):
        return _failure(
            ToolErrorKind.DENIED,
            ctx,
            f"tool {tool!r} tried to reach {filename}, which is "
            f"outside the {tier} sandbox ({text})",
        )
    if "bastion.errors.TransientToolError" in classes:
        return _failure(ToolErrorKind.TRANSIENT, ctx, text, transient=True)
    return _failure(ToolErrorKind.TOOL_ERROR, ctx, text)


def _exhausted_errno(code: object, limits: CallLimits) -> str | None:
    if code in (errno.ENOSPC, errno.EDQUOT):
        return f"its workspace is full ({mib(limits.workspace_bytes)})"
    if code == errno.EFBIG:
        return f"it wrote a file larger than {mib(limits.file_bytes)}"
    if code in (errno.EMFILE, errno.ENFILE):
        return f"it opened more than {limits.open_files} files"
    return None


def _from_exit(frame: dict[str, Any], ctx: CallContext, end: CallEnd) -> ToolOutcome:
    tool = ctx.spec.name
    cpu = frame.get("cpu_s")
    sig = frame.get("signal")
    if isinstance(cpu, int | float) and cpu >= ctx.limits.cpu_s:
        return _exhausted(
            ctx, f"tool {tool!r} used its {ctx.limits.cpu_s} CPU seconds and was killed"
        )
    if sig == signal.SIGXFSZ:
        return _exhausted(
            ctx, f"tool {tool!r} wrote a file larger than {mib(ctx.limits.file_bytes)}"
        )
    if sig == signal.SIGXCPU:
        return _exhausted(
            ctx, f"tool {tool!r} used its {ctx.limits.cpu_s} CPU seconds and was killed"
        )
    if isinstance(sig, int):
        return _crashed(ctx, f"tool {tool!r} crashed: killed by {_signal_name(sig)}{_tail(end)}")
    return _crashed(
        ctx,
        f"tool {tool!r} exited with status {frame.get('code')} before returning a result"
        f"{_tail(end)}",
    )


def _outside(filename: str, ctx: CallContext) -> bool:
    """Whether `filename` is a host path the tier hides (so a missing file is a refusal)."""
    if not posixpath.isabs(filename):
        return False
    path = posixpath.normpath(filename)
    if _under(path, (WORKSPACE,)):
        return False
    if _under(path, ctx.hidden_roots):
        return True
    return ctx.visible_roots is not None and not _under(path, ctx.visible_roots)


def _under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(end: CallEnd) -> str:
    text = end.output.decode(errors="replace").strip()
    return f"; its output ends: {text[-200:]}" if text else ""


def _exhausted(ctx: CallContext, message: str) -> ToolOutcome:
    return _failure(ToolErrorKind.RESOURCE_EXHAUSTED, ctx, message)


def _crashed(ctx: CallContext, message: str) -> ToolOutcome:
    logger.warning("%s", message)
    return _failure(ToolErrorKind.CRASHED, ctx, message)


def _failure(
    kind: ToolErrorKind, ctx: CallContext, message: str, *, transient: bool = False
) -> ToolOutcome:
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 1] + "…"
    return ToolOutcome.failure(kind, message, duration_s=ctx.duration_s, transient=transient)
