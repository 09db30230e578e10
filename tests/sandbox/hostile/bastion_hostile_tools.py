"""Hostile tools for the sandbox's hostile suite: each tries to escape, or bring down, its tier.

Imported by name in the sandbox child (the suite puts this directory on the import path), so every
tool is a module-level function of the standard library only.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from typing import Any

from bastion.sandbox.workspace import collect_files


def fork_bomb() -> int:
    """Fork until the kernel refuses; every child forks too."""
    while True:
        os.fork()


def memory_bomb() -> int:
    """Allocate 64 MiB blocks until the allocation fails."""
    blocks = []
    while True:
        blocks.append(bytearray(64 * 1024 * 1024))


def cpu_spin() -> int:
    """Spin on the CPU forever."""
    n = 0
    while True:
        n += 1


def sleep_past_deadline() -> int:
    """Sleep far longer than any deadline."""
    time.sleep(600)  # noqa: TID251 - sleeping past the deadline is the attack
    return 0


def ignore_sigterm() -> int:
    """Ignore SIGTERM (and SIGINT, SIGHUP), then sleep."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    time.sleep(600)  # noqa: TID251 - sleeping past the deadline is the attack
    return 0


def daemonise(marker: str) -> int:
    """Start a daemon (double fork, setsid) that execs a sleeping interpreter whose argv holds
    `marker`, wait until it runs, say so on stdout, then sleep past the deadline."""
    ready_r, ready_w = os.pipe()
    os.set_inheritable(ready_w, True)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            os.execv(
                sys.executable,
                [
                    sys.executable,
                    "-c",
                    f"import os, time; os.write({ready_w}, b'x'); time.sleep(600)",
                    marker,
                ],
            )
        os._exit(0)
    os.close(ready_w)
    os.read(ready_r, 1)
    print(f"daemon {marker} running", flush=True)
    time.sleep(600)  # noqa: TID251 - sleeping past the deadline is the attack
    return 0


def output_flood() -> int:
    """Write to stdout without end."""
    chunk = "x" * 65536
    while True:
        sys.stdout.write(chunk)
        sys.stdout.flush()


def disk_fill() -> int:
    """Write into the workspace until the disk is full."""
    block = b"\0" * (1024 * 1024)
    with open("fill.bin", "wb") as handle:
        while True:
            handle.write(block)
            handle.flush()


def read_environment() -> dict[str, str]:
    """Return the environment."""
    return dict(os.environ)


def read_pid1_environ() -> str:
    """Return PID 1's environment, as procfs shows it."""
    with open("/proc/1/environ", "rb") as handle:
        return handle.read().decode(errors="replace")


def read_file(path: str) -> str:
    """Return a host file's content."""
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def write_file(path: str) -> int:
    """Write a host file."""
    with open(path, "w", encoding="utf-8") as handle:
        return handle.write("written by a sandboxed tool")


def plant_symlink(target: str) -> Any:
    """Plant a link to `target` in the workspace, then hand the workspace back."""
    os.symlink(target, "innocent.txt")
    return collect_files(max_files=10, max_bytes=1 << 20)


def tcp_connect(port: int) -> str:
    """Connect to 127.0.0.1:`port` and return what the server says."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        return conn.recv(1024).decode()


def resolve(host: str) -> str:
    """Resolve a host name."""
    return str(socket.getaddrinfo(host, 443)[0][4][0])


def write_sysctl(value: str) -> int:
    """Write a host-wide kernel setting (harmless here, but root could set core_pattern too)."""
    with open("/proc/sys/kernel/printk_ratelimit", "w", encoding="ascii") as handle:
        return handle.write(value)


def whoami() -> list[int]:
    """The uid, gid and effective capabilities of the tool process."""
    with open("/proc/self/status", encoding="ascii") as handle:
        caps = next(line for line in handle if line.startswith("CapEff:")).split()[1]
    return [os.getuid(), os.getgid(), int(caps, 16)]
