"""The sandbox child's pieces that can be checked without a sandbox: frames, loading, errors."""

from __future__ import annotations

import errno
import importlib
import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bastion.sandbox import child
from bastion.sandbox.child import (
    FRAME_HEADER,
    LoadError,
    ProtocolError,
    decode_body,
    describe_error,
    encode_frame,
    recv_frame,
    resolve,
)

from .conftest import HOSTILE_DIR

SRC = str(Path(child.__file__).resolve().parents[2])


def test_a_frame_is_a_length_then_json() -> None:
    frame = encode_frame({"kind": "ready", "n": "é"})

    (size,) = FRAME_HEADER.unpack(frame[:4])
    assert size == len(frame) - 4
    assert decode_body(frame[4:]) == {"kind": "ready", "n": "é"}


@pytest.mark.parametrize(("body", "message"), [(b"{nope", "not JSON"), (b"[1]", "JSON object")])
def test_a_bad_body_is_a_protocol_error(body: bytes, message: str) -> None:
    with pytest.raises(ProtocolError, match=message):
        decode_body(body)


def test_frames_are_read_whole_and_bounded() -> None:
    left, right = socket.socketpair()
    with left, right:
        frame = encode_frame({"kind": "call", "data": "x" * 100_000})
        left.sendall(frame)
        assert recv_frame(right)["data"] == "x" * 100_000
        left.sendall(FRAME_HEADER.pack(child.MAX_FRAME_BYTES + 1))
        with pytest.raises(ProtocolError, match="larger than"):
            recv_frame(right)
        left.close()
        with pytest.raises(ProtocolError, match="closed the connection"):
            recv_frame(right)


def test_an_error_is_described_by_its_classes_errno_and_cause() -> None:
    try:
        try:
            open("/nonexistent/for/sure")  # noqa: SIM115
        except OSError as exc:
            raise RuntimeError("wrapped") from exc
    except RuntimeError as exc:
        described = describe_error(exc)

    assert described["kind"] == "error"
    assert described["type"] == "RuntimeError"
    assert "FileNotFoundError" in described["classes"]  # the cause's classes come along
    assert "errno" not in described  # only the raised exception's own errno is reported
    assert "Traceback" in described["traceback"]

    io_error = describe_error(FileNotFoundError(errno.ENOENT, "gone", "/x"))
    assert io_error["errno"] == errno.ENOENT
    assert io_error["filename"] == "/x"
    json.dumps(io_error)


def test_resolve_unwraps_a_tool_spec_and_names_what_is_missing(monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(HOSTILE_DIR))
    samples = importlib.import_module("bastion_sandbox_samples")

    assert resolve("bastion_sandbox_samples", "decorated") is samples.async_double
    with pytest.raises(LoadError, match="cannot import 'no_such_module_here'"):
        resolve("no_such_module_here", "f")
    with pytest.raises(LoadError, match="has no attribute path 'missing'"):
        resolve("bastion_sandbox_samples", "missing")
    with pytest.raises(LoadError, match=r"Total\.model_config is a dict, not a callable"):
        resolve("bastion_sandbox_samples", "Total.model_config")


def _python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-I", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    return done.stdout.strip()


def test_bastion_packages_load_lazily_in_the_child() -> None:
    out = _python(
        f"import sys, runpy; sys.path.insert(0, {SRC!r});"
        f"runpy.run_path({child.__file__!r})['install_lazy_packages']();"
        "import bastion.sandbox.probe as p;"
        "print(p.echo(5), 'bastion.system' in sys.modules, 'pydantic' in sys.modules);"
        "import bastion; print(bastion.AgentSystem.__name__, 'bastion.system' in sys.modules)"
    )

    assert out.splitlines() == ["5 False False", "AgentSystem True"]


def test_limits_are_set_in_the_child_process() -> None:
    out = _python(
        f"import sys, resource; sys.path.insert(0, {SRC!r});"
        "from bastion.sandbox.child import apply_limits;"
        "apply_limits({'memory_bytes': 1 << 30, 'cpu_s': 7, 'open_files': 64,"
        " 'file_bytes': 1 << 20, 'processes': 9});"
        "g = resource.getrlimit;"
        "u = resource.getrusage(resource.RUSAGE_SELF); used = int(u.ru_utime + u.ru_stime);"
        "print(g(resource.RLIMIT_CPU) == (used + 7, used + 8), g(resource.RLIMIT_NOFILE),"
        " g(resource.RLIMIT_FSIZE), g(resource.RLIMIT_AS)[0] > 1 << 30)"
    )

    # CPU and memory are counted on top of what loading the tool took.
    assert out == "True (64, 64) (1048576, 1048576) True"


def test_the_child_explains_its_usage(capsys) -> None:
    assert child.main(["child.py"]) == 2
    assert "usage: child.py CONTROL_FD" in capsys.readouterr().err
