"""Real MCP servers for the tests: `mcp-server-time` over stdio, and `http_server.py` over HTTP.

Both are child processes of the test process: they are found, paused and killed by process id,
and every wait on them is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.settings import McpServerSettings

HTTP_SERVER = Path(__file__).with_name("http_server.py")
#: Bounds every wait on a server (start, stop): generous for a loaded machine, never reached.
WAIT_S = 30.0


def time_server(**overrides: object) -> McpServerSettings:
    """Settings mounting `mcp-server-time` (from PyPI) under the prefix ``time``."""
    config: dict[str, object] = {
        "prefix": "time",
        "command": sys.executable,
        "args": ["-m", "mcp_server_time", "--local-timezone", "UTC"],
        "scopes": ["clock"],
        "side_effects": False,
        "timeout_s": 10.0,
        "connect_timeout_s": WAIT_S,
    }
    config.update(overrides)
    return McpServerSettings.model_validate(config)


def children_running(marker: str) -> list[int]:
    """Process ids of this process's children whose command line contains `marker`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        # The parent's pid is the 2nd field after the command name, which is in parentheses.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == os.getpid() and marker in cmdline and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def only_child(marker: str) -> int:
    pids = children_running(marker)
    assert len(pids) == 1, f"expected one child running {marker!r}, found {pids}"
    return pids[0]


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    pause = threading.Event()
    for _ in range(int(WAIT_S / 0.05)):
        if process.poll() is not None:
            raise AssertionError(f"the test MCP server exited early ({process.returncode})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            pause.wait(0.05)  # a real server is starting: poll, bounded
    raise AssertionError(f"the test MCP server did not listen on port {port} in {WAIT_S}s")


class HttpServer:
    def __init__(self, process: subprocess.Popen[bytes], port: int) -> None:
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}/mcp"

    def settings(self, **overrides: object) -> McpServerSettings:
        config: dict[str, object] = {
            "prefix": "web",
            "url": self.url,
            "scopes": ["web"],
            "timeout_s": 10.0,
            "connect_timeout_s": WAIT_S,
        }
        config.update(overrides)
        return McpServerSettings.model_validate(config)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=WAIT_S)


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(HTTP_SERVER), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield HttpServer(process, port)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=WAIT_S)
