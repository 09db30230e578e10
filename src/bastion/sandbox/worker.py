"""`Worker`: one started sandbox child, used for exactly one call, then destroyed with its tree.

Starting a worker (`Worker.spawn`) is cheap and does not wait: it forks ``/bin/sh``, which writes
``0`` to the worker's ``cgroup.procs`` (moving itself, and so everything it will start, under the
call's process cap) and execs the tier's launcher around the child. The environment handed over is
fixed and minimal (`CHILD_ENV`): no secret of the runtime's ever reaches bubblewrap, ``unshare`` or
the child, whose PID 1 anybody inside could read through ``/proc``. The child then imports what it
was told to preload and says **ready**; a warm worker is one whose ready frame is already waiting.

`Worker.call` sends the call and waits for the first of: a frame (result, error, or the
supervisor's exit report), the output cap being passed, the time limit. Whatever happened, every
process in the worker's cgroup is then sent SIGKILL before the call returns; `Worker.destroy`
(run by the pool once the outcome is on its way) repeats that until the cgroup is empty, reaps the
worker and removes the cgroup: no process of a call outlives it, a ``setsid`` daemon included.
Waiting for the exit uses a pidfd, so nothing blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from dataclasses import dataclass
from typing import Any, Literal

from bastion.clock import Clock
from bastion.sandbox.cgroups import Cgroup
from bastion.sandbox.child import FRAME_HEADER, ProtocolError, decode_body, encode_frame
from bastion.sandbox.launch import Launcher, child_argv
from bastion.sandbox.limits import CallLimits

#: The whole environment of the launcher and the child: nothing of the runtime's.
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}
#: The wrapper's script: join the cgroup (``$0``), then become the launcher.
_JOIN_CGROUP = 'echo 0 > "$0" && exec "$@"'
#: How much of a call's output (the end of it) is kept for error messages and logs.
OUTPUT_TAIL_BYTES = 8192
#: Slack over the result cap for the frame's own envelope (``{"kind":"result","value":...}``).
_FRAME_SLACK = 1024

How = Literal["frame", "timeout", "output_flood", "frame_too_large", "lost"]


class WorkerStartError(Exception):
    """The worker did not become ready: the message says why (with its last output)."""


class _FrameTooLarge(Exception):
    def __init__(self, size: int) -> None:
        super().__init__(f"a frame of {size} bytes")
        self.size = size


@dataclass(frozen=True, slots=True, kw_only=True)
class CallEnd:
    """How a call ended, as the runtime saw it from outside."""

    how: How
    #: The first frame received (result, error or exit report), when ``how == "frame"``.
    frame: dict[str, Any] | None
    #: The end of the call's stdout and stderr (at most `OUTPUT_TAIL_BYTES`).
    output: bytes
    output_total: int
    #: Forks refused by the process cap during the call.
    cap_hits: int
    #: Processes still in the call's cgroup when it was torn down.
    processes_killed: int
    #: The launcher's exit status (negative: killed by that signal).
    returncode: int | None


class Worker:
    """A started child: `ready`, then one `call`, then gone. Use `spawn` to make one."""

    def __init__(
        self, *, proc: subprocess.Popen[bytes], sock: socket.socket, cgroup: Cgroup, clock: Clock
    ) -> None:
        self._proc = proc
        self._sock = sock
        self._cgroup = cgroup
        self._clock = clock
        assert proc.stdout is not None
        self._out = proc.stdout
        self._tail = b""
        self._total = 0
        self._output_cap = 0
        self._flood: asyncio.Future[None] | None = None
        self._reading = False
        self._done = False
        self._ready: dict[str, Any] | None = None

    @classmethod
    def spawn(
        cls, *, launcher: Launcher, config: dict[str, Any], cgroup: Cgroup, clock: Clock
    ) -> Worker:
        """Start a worker in `cgroup` and send it `config`; does not wait for it.

        Raises:
            OSError: the wrapper could not be started (no ``/bin/sh``, out of processes).
        """
        parent, child = socket.socketpair()
        try:
            argv = launcher.command(child_argv(child.fileno()))
            proc = subprocess.Popen(
                ["/bin/sh", "-c", _JOIN_CGROUP, str(cgroup.procs_file), *argv],
                env=CHILD_ENV,
                cwd="/",
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                pass_fds=(child.fileno(),),
                start_new_session=True,
            )
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        # A few hundred bytes: the socket buffer takes them. Should the child have died at once,
        # `ready` reports it with its output.
        with contextlib.suppress(OSError):
            parent.sendall(encode_frame(config))
        parent.setblocking(False)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        return cls(proc=proc, sock=parent, cgroup=cgroup, clock=clock)

    @property
    def alive(self) -> bool:
        """Whether the worker is still running (a warm worker may have died while idle)."""
        return not self._done and self._proc.poll() is None

    async def ready(self, timeout_s: float) -> dict[str, Any]:
        """Wait for the **ready** frame (at once if it came already).

        Raises:
            WorkerStartError: it did not come in time, the child could not set up, or it died.
        """
        if self._ready is not None:
            return self._ready
        try:
            async with asyncio.timeout(timeout_s):
                frame = await self._read_frame(1 << 20)
        except TimeoutError:
            raise WorkerStartError(
                f"the sandbox worker was not ready within {timeout_s:g}s{self._last_words()}"
            ) from None
        except (ProtocolError, OSError, _FrameTooLarge) as exc:
            await self.destroy()
            raise WorkerStartError(
                f"the sandbox worker exited while starting (status "
                f"{self._proc.returncode}){self._last_words()}"
            ) from exc
        if frame.get("kind") == "ready":
            self._ready = frame
            return frame
        error = frame.get("error") or {}
        raise WorkerStartError(
            f"the sandbox worker could not set up: {error.get('type')}: {error.get('message')}"
        )

    async def call(self, request: dict[str, Any], *, limit_s: float, limits: CallLimits) -> CallEnd:
        """Run one call, then SIGKILL the worker and everything it started.

        The worker is spent afterwards: `destroy` it (reap, remove its cgroup).

        Args:
            request: The **call** frame.
            limit_s: Seconds the call may take, from now.
            limits: The output and result caps (the rlimits travel in `request`).
        """
        loop = asyncio.get_running_loop()
        self._drain()
        self._tail, self._total = b"", 0
        self._output_cap = limits.output_bytes
        flood: asyncio.Future[None] = loop.create_future()
        self._flood = flood
        loop.add_reader(self._out.fileno(), self._on_output)
        self._reading = True
        reading = asyncio.ensure_future(self._read_frame(limits.result_bytes + _FRAME_SLACK))
        how: How = "lost"
        frame: dict[str, Any] | None = None
        cap_hits, killed = 0, 0
        try:
            try:
                async with asyncio.timeout(limit_s):
                    await loop.sock_sendall(self._sock, encode_frame(request))
                    waiting: set[asyncio.Future[Any]] = {reading, flood}
                    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            except TimeoutError:
                how = "timeout"
            except OSError:
                how = "lost"  # the child died before it took the call
            else:
                how, frame = _first(reading, flood)
        finally:
            # Kill first, whatever happened (cancellation included). Reaping and removing the
            # cgroup are left to `destroy`, which the pool runs after the outcome is returned.
            killed = self._cgroup.kill_all()
            cap_hits = self._cgroup.cap_hits()
            reading.cancel()
            with contextlib.suppress(BaseException):
                await reading
        if how == "lost":
            await self.destroy()  # its exit status and last words explain the loss
        return CallEnd(
            how=how,
            frame=frame,
            output=self._tail,
            output_total=self._total,
            cap_hits=cap_hits,
            processes_killed=killed,
            returncode=self._proc.returncode,
        )

    async def destroy(self) -> None:
        """Kill the worker's whole tree, reap it and remove its cgroup. Safe to call twice."""
        if self._done:
            return
        self._cgroup.kill_all()
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        await self._wait_exit(2.0)
        self._close()
        await self._cgroup.destroy(self._clock)

    def kill_now(self) -> None:
        """The same, synchronously and best-effort (finalizers, interpreter exit)."""
        if self._done:
            return
        self._cgroup.kill_all()
        with contextlib.suppress(OSError):
            self._proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=2)
        self._close()
        self._cgroup.kill_until_empty()
        self._cgroup.remove()

    # -- internals -----------------------------------------------------------------------------

    def _close(self) -> None:
        self._done = True
        self._drain()
        if self._reading:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._out.fileno())
            self._reading = False
        self._sock.close()
        self._out.close()

    async def _wait_exit(self, timeout_s: float) -> None:
        if self._proc.poll() is not None:
            return
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()
        pidfd = os.pidfd_open(self._proc.pid)
        loop.add_reader(pidfd, _resolve, exited)
        try:
            async with asyncio.timeout(timeout_s):
                await exited
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=0.5)

    async def _recv_exact(self, size: int) -> bytes:
        loop = asyncio.get_running_loop()
        buffer = bytearray()
        while len(buffer) < size:
            chunk = await loop.sock_recv(self._sock, min(size - len(buffer), 1 << 20))
            if not chunk:
                raise ProtocolError("the sandbox worker closed its end")
            buffer += chunk
        return bytes(buffer)

    async def _read_frame(self, max_bytes: int) -> dict[str, Any]:
        (size,) = FRAME_HEADER.unpack(await self._recv_exact(FRAME_HEADER.size))
        if size > max_bytes:
            raise _FrameTooLarge(size)
        return decode_body(await self._recv_exact(size))

    def _on_output(self) -> None:
        if not self._read_output() and self._reading:
            asyncio.get_running_loop().remove_reader(self._out.fileno())
            self._reading = False
        if self._total > self._output_cap and self._flood is not None and not self._flood.done():
            self._flood.set_result(None)

    def _read_output(self) -> bool:
        """Read what is there; False at end of file."""
        try:
            data = os.read(self._out.fileno(), 65536)
        except BlockingIOError:
            return True
        except OSError:
            return False
        if not data:
            return False
        self._total += len(data)
        self._tail = (self._tail + data)[-OUTPUT_TAIL_BYTES:]
        return True

    def _drain(self) -> None:
        """Read whatever output is waiting, without blocking."""
        if self._out.closed:
            return
        for _ in range(64):
            before = self._total
            if not self._read_output() or self._total == before:
                return

    def _last_words(self) -> str:
        self._drain()
        text = self._tail.decode(errors="replace").strip()
        return f"; its output ends: {text[-400:]}" if text else ""


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _first(
    reading: asyncio.Future[dict[str, Any]], flood: asyncio.Future[None]
) -> tuple[How, dict[str, Any] | None]:
    if flood.done():
        return "output_flood", None
    error = reading.exception()
    if error is None:
        return "frame", reading.result()
    if isinstance(error, _FrameTooLarge):
        return "frame_too_large", None
    if isinstance(error, ProtocolError | OSError):
        return "lost", None
    raise error
