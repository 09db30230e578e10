"""The classification table, one row at a time (pure: no process is started)."""

from __future__ import annotations

import errno
import signal
from typing import Any

import pytest

from bastion.messages import ToolErrorKind
from bastion.router.registry import make_tool
from bastion.sandbox.limits import CallLimits
from bastion.sandbox.outcomes import CallContext, classify
from bastion.sandbox.worker import CallEnd
from bastion.settings import SandboxLimits


def tool(n: int) -> int:
    return n


LIMITS = CallLimits.from_settings(
    SandboxLimits(cpu_s=2, processes=16, workspace_mb=4, output_kb=64, result_kb=32)
)


def context(**fields: Any) -> CallContext:
    values: dict[str, Any] = {
        "spec": make_tool(tool),
        "tier": "os",
        "limits": LIMITS,
        "limit_s": 1.5,
        "duration_s": 0.25,
        "network": False,
        "visible_roots": ("/usr/lib", "/opt/python"),
        "hidden_roots": ("/tmp",),
    }
    values.update(fields)
    return CallContext(**values)


def end(how: str = "frame", frame: dict[str, Any] | None = None, **fields: Any) -> CallEnd:
    values: dict[str, Any] = {
        "how": how,
        "frame": frame,
        "output": b"",
        "output_total": 0,
        "cap_hits": 0,
        "processes_killed": 2,
        "returncode": None,
    }
    values.update(fields)
    return CallEnd(**values)


def error(classes: list[str], message: str = "boom", **fields: Any) -> dict[str, Any]:
    return {"kind": "error", "type": classes[0], "message": message, "classes": classes, **fields}


def test_a_result_is_a_success_carrying_the_value() -> None:
    outcome = classify(end(frame={"kind": "result", "value": {"a": [1, 2]}}), context())

    assert outcome.ok
    assert outcome.value == {"a": [1, 2]}
    assert outcome.duration_s == 0.25


@pytest.mark.parametrize(
    ("the_end", "kind", "text"),
    [
        (end("timeout"), ToolErrorKind.TIMEOUT, "timed out after 1.5s on the os tier"),
        (end("timeout", cap_hits=3), ToolErrorKind.RESOURCE_EXHAUSTED, "more than 16 processes"),
        (end("output_flood"), ToolErrorKind.RESOURCE_EXHAUSTED, "more than 64 KiB to stdout"),
        (end("frame_too_large"), ToolErrorKind.RESOURCE_EXHAUSTED, "more than 32 KiB of JSON"),
        (
            end("lost", returncode=-9, output=b"bwrap: Can't mount proc"),
            ToolErrorKind.CRASHED,
            "died without an answer (status -9); its output ends: bwrap: Can't mount proc",
        ),
        (end(frame={"kind": "surprise"}), ToolErrorKind.CRASHED, "sent a 'surprise' frame"),
    ],
)
def test_how_the_call_ended_decides(the_end: CallEnd, kind: ToolErrorKind, text: str) -> None:
    outcome = classify(the_end, context())

    assert outcome.error_kind is kind
    assert text in (outcome.error or "")
    assert outcome.transient is (kind is ToolErrorKind.TIMEOUT)


@pytest.mark.parametrize(
    ("frame", "kind", "text"),
    [
        (
            error(["ModuleNotFoundError"], load_error=True),
            ToolErrorKind.TOOL_ERROR,
            "could not be loaded in the os sandbox",
        ),
        (
            error(["bastion.sandbox.child.ResultTooLarge"], "it returned more than 32 KiB"),
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "it returned more than 32 KiB",
        ),
        (
            error(["bastion.tools.pyexec.OutputTooLarge"], "printed too much"),
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "printed too much",
        ),
        (error(["MemoryError"]), ToolErrorKind.RESOURCE_EXHAUSTED, "ran out of memory"),
        (
            error(["OSError"], errno=errno.ENOSPC),
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "workspace is full (4 MiB)",
        ),
        (
            error(["OSError"], errno=errno.EFBIG),
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "a file larger than 64 MiB",
        ),
        (
            error(["OSError"], errno=errno.EMFILE),
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "more than 256 files",
        ),
        (
            error(["socket.gaierror", "OSError"], errno=-3),
            ToolErrorKind.DENIED,
            "tried to use the network",
        ),
        (
            error(["ConnectionRefusedError"], errno=errno.ECONNREFUSED),
            ToolErrorKind.DENIED,
            "tried to use the network",
        ),
        (error(["PermissionError"], errno=errno.EACCES), ToolErrorKind.DENIED, "refused"),
        (error(["OSError"], errno=errno.EROFS), ToolErrorKind.DENIED, "refused"),
        (error(["WorkspaceLinkRefused", "PermissionError"]), ToolErrorKind.DENIED, "refused"),
        (
            error(["FileNotFoundError"], errno=errno.ENOENT, filename="/etc/shadow"),
            ToolErrorKind.DENIED,
            "tried to reach /etc/shadow, which is outside the os sandbox",
        ),
        (
            error(["FileNotFoundError"], errno=errno.ENOENT, filename="/tmp/pytest/secret"),
            ToolErrorKind.DENIED,
            "outside the os sandbox",
        ),
        (
            error(["FileNotFoundError"], errno=errno.ENOENT, filename="/tmp/workspace/in.csv"),
            ToolErrorKind.TOOL_ERROR,
            "FileNotFoundError: boom",
        ),
        (
            error(["FileNotFoundError"], errno=errno.ENOENT, filename="/usr/lib/missing.so"),
            ToolErrorKind.TOOL_ERROR,
            "FileNotFoundError",
        ),
        (
            error(["FileNotFoundError"], errno=errno.ENOENT, filename="relative.txt"),
            ToolErrorKind.TOOL_ERROR,
            "FileNotFoundError",
        ),
        (
            error(["x.Flaky", "bastion.errors.TransientToolError", "Exception"], "later"),
            ToolErrorKind.TRANSIENT,
            "Flaky: later",
        ),
        (
            error(["ValueError", "Exception"], "bad n"),
            ToolErrorKind.TOOL_ERROR,
            "ValueError: bad n",
        ),
    ],
)
def test_an_exception_is_classified_by_its_classes_and_errno(
    frame: dict[str, Any], kind: ToolErrorKind, text: str
) -> None:
    outcome = classify(end(frame=frame), context())

    assert outcome.error_kind is kind
    assert text in (outcome.error or "")


def test_network_errors_are_the_tools_own_when_the_tier_has_a_network() -> None:
    frame = error(["ConnectionRefusedError"], "refused", errno=errno.ECONNREFUSED)

    outcome = classify(end(frame=frame), context(network=True))

    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR


def test_a_missing_file_is_only_a_refusal_where_the_tier_hides_things() -> None:
    frame = error(["FileNotFoundError"], errno=errno.ENOENT, filename="/etc/shadow")

    outcome = classify(end(frame=frame), context(visible_roots=None, hidden_roots=()))

    assert outcome.error_kind is ToolErrorKind.TOOL_ERROR


@pytest.mark.parametrize(
    ("frame", "kind", "text"),
    [
        (
            {"kind": "exit", "signal": signal.SIGKILL, "cpu_s": 2.01},
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "its 2 CPU seconds",
        ),
        (
            {"kind": "exit", "signal": signal.SIGXCPU, "cpu_s": 1.99},
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "its 2 CPU seconds",
        ),
        (
            {"kind": "exit", "signal": signal.SIGXFSZ, "cpu_s": 0.1},
            ToolErrorKind.RESOURCE_EXHAUSTED,
            "larger than 64 MiB",
        ),
        (
            {"kind": "exit", "signal": signal.SIGSEGV, "cpu_s": 0.1},
            ToolErrorKind.CRASHED,
            "killed by SIGSEGV",
        ),
        (
            {"kind": "exit", "signal": 77, "cpu_s": 0.1},
            ToolErrorKind.CRASHED,
            "killed by signal 77",
        ),
        ({"kind": "exit", "code": 3, "cpu_s": 0.1}, ToolErrorKind.CRASHED, "exited with status 3"),
    ],
)
def test_a_tool_process_that_died_is_classified_by_how(
    frame: dict[str, Any], kind: ToolErrorKind, text: str
) -> None:
    outcome = classify(end(frame=frame), context())

    assert outcome.error_kind is kind
    assert text in (outcome.error or "")


def test_a_fork_bomb_wins_over_what_the_tool_did_next() -> None:
    frame = {"kind": "exit", "code": 1, "cpu_s": 0.1}

    outcome = classify(end(frame=frame, cap_hits=40), context())

    assert outcome.error_kind is ToolErrorKind.RESOURCE_EXHAUSTED


def test_messages_stay_short() -> None:
    outcome = classify(end(frame=error(["ValueError"], "x" * 5000)), context())

    assert outcome.error is not None
    assert len(outcome.error) == 500
    assert outcome.error.endswith("…")
