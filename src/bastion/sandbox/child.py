"""The sandbox child: the program a ``process`` or ``os`` tier worker runs, one tool call per life.

It is started by path (``python -I -B child.py FD``) by `bastion.sandbox.worker`, inside the
tier's namespaces, and talks to the runtime over one Unix socket (file descriptor ``FD``) in
length-prefixed JSON frames (`encode_frame`). It imports nothing but the standard library until it
is told what to load, so that a warm worker costs an interpreter and not the whole of Bastion:
`LazyPackageFinder` makes Bastion's packages run their ``__init__`` only on first use of a name they
define, which keeps ``import bastion`` (about a second of CPU) out of tools that do not need it.

One life, in order:

1. **config** frame: ``sys.path``, modules to preload, and (process tier) the private ``/tmp`` to
   mount and the unprivileged uid to drop to. Answers **ready**.
2. **call** frame (read by the tool process): the tool's ``module`` and ``qualname``, its args,
   its limits.
3. Before saying ready, the child forks the *tool process* and becomes its *supervisor*. The tool
   process starts a session of its own, enters the workspace and waits; given the call, it loads
   the tool and its args, applies the rlimits, drops to the unprivileged uid, calls the tool and
   sends one **result** or **error** frame. The supervisor reaps every process that ends up under
   it (it is PID 1 of the process tier's PID namespace) and, once the tool process is gone, sends
   an **exit** frame (status, signal, CPU seconds used) and exits, which ends the namespace.

The runtime trusts none of this: it enforces the deadline, the output cap and the frame cap itself
and kills the whole tree through its pids cgroup (`bastion.sandbox.cgroups`). The child's checks
(result size, a forked copy of the tool returning) only make the common failures precise.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import json
import os
import resource
import signal
import socket
import stat
import struct
import sys
import traceback
import types
from collections.abc import Callable
from typing import Any

#: Header of every frame: the body's length in bytes, big-endian.
FRAME_HEADER = struct.Struct(">I")
#: No frame is ever larger than this, whatever the caps say (a bad header must not allocate GBs).
MAX_FRAME_BYTES = 256 * 1024 * 1024
#: The tool's working directory, inside the sandbox's private, size-capped ``/tmp``.
WORKSPACE = "/tmp/workspace"
#: World-writable directories the process tier hides behind private tmpfs mounts.
PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock", "/dev/mqueue")

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 32, 4096, 16384
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_JSON_NATIVE = (str, int, float, bool, type(None))


class ProtocolError(Exception):
    """A frame could not be read or was not what this side expected."""


class ResultTooLarge(Exception):
    """The tool's result, as JSON, is larger than the call's ``max_result_bytes``."""


class LoadError(Exception):
    """The tool could not be imported or its args rebuilt inside the sandbox."""


# -- frames --------------------------------------------------------------------------------------


def encode_frame(payload: dict[str, Any]) -> bytes:
    """``payload`` as one frame: a 4-byte length, then compact UTF-8 JSON."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return FRAME_HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    """Parse a frame's body; a frame is always a JSON object.

    Raises:
        ProtocolError: not JSON, or not an object.
    """
    try:
        value = json.loads(body)
    except ValueError as exc:
        raise ProtocolError(f"a frame is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"a frame must be a JSON object, not {type(value).__name__}")
    return value


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            raise ProtocolError("the runtime closed the connection")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> dict[str, Any]:
    """Read one frame from a blocking socket (the child's side)."""
    (size,) = FRAME_HEADER.unpack(_recv_exact(sock, FRAME_HEADER.size))
    if size > MAX_FRAME_BYTES:
        raise ProtocolError(f"a frame of {size} bytes is larger than {MAX_FRAME_BYTES}")
    return decode_body(_recv_exact(sock, size))


# -- importing without the parents' __init__ -----------------------------------------------------


class _LazyPackage(types.ModuleType):
    """A package whose ``__init__`` runs the first time a name it defines is looked up.

    Submodules import normally through its ``__path__``; ``from pkg import name`` and ``pkg.name``
    run the real ``__init__`` into this very module object, so nothing can tell the difference
    but the time saved when nobody asks.
    """

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__
        if name.startswith("__") or "_lazy_loader" not in state:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        state.pop("_lazy_loader").exec_module(self)
        try:
            return state[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


class _LazyPackageLoader:
    """Creates a `_LazyPackage` and defers the real loader's work to its first lookup."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> types.ModuleType:
        module = _LazyPackage(spec.name)
        module.__dict__["_lazy_loader"] = self._loader
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        """Nothing yet: `_LazyPackage.__getattr__` runs the real ``__init__``."""


class LazyPackageFinder:
    """Makes the packages under `roots` lazy (their ``__init__`` runs on first use).

    Importing ``bastion.tools.pyexec`` would otherwise run ``bastion/__init__.py``, which imports
    the whole runtime (about a second of CPU) for a module that needs none of it. Only packages
    are affected, only under `roots`, and their ``__init__``s only re-export names.
    """

    def __init__(self, roots: tuple[str, ...]) -> None:
        self._roots = roots

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name.split(".", 1)[0] not in self._roots:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is None:
                continue
            if spec.submodule_search_locations is None or spec.loader is None:
                return None  # a plain module: the normal machinery imports it
            spec.loader = _LazyPackageLoader(spec.loader)  # type: ignore[assignment]
            return spec
        return None


def install_lazy_packages(roots: tuple[str, ...] = ("bastion",)) -> None:
    """Put a `LazyPackageFinder` for `roots` first on ``sys.meta_path`` (once)."""
    if not any(isinstance(finder, LazyPackageFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, LazyPackageFinder(roots))


def resolve(module: str, qualname: str) -> Callable[..., Any]:
    """The callable at ``module:qualname``; a `ToolSpec` found there gives its ``fn``.

    Raises:
        LoadError: the module cannot be imported or the name does not lead to a callable.
    """
    try:
        target: Any = importlib.import_module(module)
    except BaseException as exc:
        raise LoadError(f"cannot import {module!r}: {type(exc).__name__}: {exc}") from None
    for part in qualname.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"{module!r} has no attribute path {qualname!r}") from None
    if type(target).__name__ == "ToolSpec" and callable(getattr(target, "fn", None)):
        target = target.fn
    if not callable(target):
        raise LoadError(f"{module}:{qualname} is a {type(target).__name__}, not a callable")
    return target  # type: ignore[no-any-return]


def _rebuild_args(fn: Callable[..., Any], call: dict[str, Any]) -> dict[str, Any]:
    """The tool's keyword arguments: JSON values, re-validated into their types when needed."""
    kwargs: dict[str, Any] = dict(call.get("kwargs") or {})
    if call.get("revalidate"):
        import typing

        from pydantic import TypeAdapter

        hints = typing.get_type_hints(fn, include_extras=True)
        for name, value in kwargs.items():
            if name in hints:
                kwargs[name] = TypeAdapter(hints[name]).validate_python(value)
    context = call.get("context")
    if context is not None:
        from bastion.messages import Principal
        from bastion.router.interface import ToolContext

        principal = context["principal"]
        kwargs[context["param"]] = ToolContext(
            run_id=context["run_id"],
            step_id=context["step_id"],
            attempt=context["attempt"],
            idempotency_key=context["idempotency_key"],
            principal=Principal(
                id=principal["id"],
                roles=frozenset(principal["roles"]),
                scopes=frozenset(principal["scopes"]),
                display_name=principal["display_name"],
            ),
        )
    return kwargs


# -- describing what happened --------------------------------------------------------------------


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}" if cls.__module__ != "builtins" else cls.__name__


def describe_error(exc: BaseException) -> dict[str, Any]:
    """An exception as an **error** frame: its class and bases by name, errno, path, message."""
    chain: list[str] = []
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            break
        chain.extend(_qualified(cls) for cls in type(seen).__mro__ if cls is not object)
        seen = seen.__cause__ or seen.__context__  # urllib wraps a gaierror as the context
    message = str(exc)
    frame: dict[str, Any] = {
        "kind": "error",
        "type": _qualified(type(exc)),
        "message": message[:2000],
        "classes": chain[:64],
    }
    if isinstance(exc, OSError):
        frame["errno"] = exc.errno
        if isinstance(exc.filename, str):
            frame["filename"] = exc.filename[:1000]
    with contextlib.suppress(Exception):
        frame["traceback"] = "".join(traceback.format_exception(exc))[-4000:]
    return frame


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        pass
    problem = TypeError(
        f"the tool returned a {type(value).__name__} that cannot be turned into JSON; return "
        "JSON data, a dataclass or a pydantic model"
    )
    try:
        from pydantic_core import to_jsonable_python
    except ImportError:
        raise problem from None
    try:
        return to_jsonable_python(value)
    except Exception:
        raise problem from None


# -- the tool process ----------------------------------------------------------------------------


_LIBC: list[Any] = []


def _libc() -> Any:
    if not _LIBC:
        import ctypes

        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    return _LIBC[0]


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):
        _libc().prctl(option, value, 0, 0, 0)


def _memory_in_use() -> int:
    """This process's address space in bytes (VmSize), the base for the memory limit."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def apply_limits(limits: dict[str, int]) -> None:
    """Set this process's rlimits from a call's ``limits`` (bytes, seconds, counts).

    The address-space limit is *added* to what the process already maps, so ``memory_bytes`` means
    what the tool may allocate, whatever the interpreter and its imports cost. Likewise the CPU
    limit: ``cpu_s`` more seconds than loading the tool took, soft (SIGXCPU), then hard one second
    later (SIGKILL), per process.
    """
    memory = limits["memory_bytes"] + _memory_in_use()
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(usage.ru_utime + usage.ru_stime) + limits["cpu_s"]
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["open_files"], limits["open_files"]))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["file_bytes"], limits["file_bytes"]))
    # No RLIMIT_NPROC: root ignores it, and under the shared sandbox uid it would count every
    # concurrent call's processes together, so one call's fork bomb would starve the others.
    # The process cap is the call's own pids cgroup, set by the runtime.


def _drop_privileges(uid: int, gid: int) -> None:
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() == 0 or os.geteuid() == 0:  # pragma: no cover - setuid cannot half-fail
        raise PermissionError("could not drop root privileges")


def _tool_process(sock: socket.socket, config: dict[str, Any]) -> None:
    """The tool process, forked before the call arrives. Never returns.

    It starts a session of its own, waits for the **call**, loads the tool and its args (still as
    root: the interpreter's files are readable), applies the limits, drops to the sandbox uid,
    enters the workspace, calls the tool and sends one frame.
    """
    me = os.getpid()
    os.setsid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.umask(0o077)
    try:
        call = recv_frame(sock)
    except ProtocolError:
        os._exit(0)  # closed while idle: nothing to do
    try:
        fn = resolve(call["module"], call["qualname"])
        kwargs = _rebuild_args(fn, call)
        if call.get("is_async"):
            import asyncio  # imported while the interpreter's files are readable
        if "pydantic" in sys.modules:
            import pydantic_core  # noqa: F401 - likewise, for serialising the result
    except BaseException as exc:
        error = describe_error(exc)
        error["load_error"] = True
        with contextlib.suppress(OSError):
            sock.sendall(encode_frame(error))
        os._exit(0)
    try:
        apply_limits(call["limits"])
        drop = config.get("drop_to")
        if drop is not None:
            _drop_privileges(int(drop[0]), int(drop[1]))
        _prctl(_PR_SET_NO_NEW_PRIVS, 1)
        os.chdir(WORKSPACE)  # as the tool's user: the workspace is its own, mode 0700
        if call.get("is_async"):
            import asyncio

            value = asyncio.run(fn(**kwargs))
        else:
            value = fn(**kwargs)
        if os.getpid() != me:
            os._exit(0)  # a forked copy of the tool returned: only the tool process answers
        body = encode_frame({"kind": "result", "value": _jsonable(value)})
        if len(body) > call["max_result_bytes"]:
            raise ResultTooLarge(
                f"it returned more than {call['max_result_bytes'] // 1024} KiB of JSON "
                f"({len(body)} bytes)"
            )
    except BaseException as exc:  # everything the tool does wrong is reported, then we exit
        if os.getpid() != me:
            os._exit(1)
        try:
            body = encode_frame(describe_error(exc))
        except BaseException:  # out of memory while describing it: say so in a fixed frame
            body = _MEMORY_FRAME
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    with contextlib.suppress(OSError):
        sock.sendall(body)
    os._exit(0)


_MEMORY_FRAME = encode_frame(
    {"kind": "error", "type": "MemoryError", "message": "", "classes": ["MemoryError"]}
)


# -- the supervisor ------------------------------------------------------------------------------


def _supervise(sock: socket.socket, tool_pid: int) -> None:
    """Reap every child until the tool process is gone, then report how it ended. Never returns."""
    while True:
        try:
            pid, status, usage = os.wait4(-1, 0)
        except ChildProcessError:  # pragma: no cover - the tool process is our child
            os._exit(0)
        except InterruptedError:  # pragma: no cover - retried by Python since PEP 475
            continue
        if pid != tool_pid:
            continue
        report: dict[str, Any] = {
            "kind": "exit",
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 3),
            "max_rss_kb": usage.ru_maxrss,
        }
        if os.WIFSIGNALED(status):
            report["signal"] = os.WTERMSIG(status)
        else:
            report["code"] = os.WEXITSTATUS(status)
        with contextlib.suppress(OSError):
            sock.sendall(encode_frame(report))
        os._exit(0)


def _mount_private_tmpfs(size_bytes: int, keep: list[str]) -> None:
    """Hide the world-writable directories behind private tmpfs mounts (process tier, as root).

    Paths of `keep` (the import path) that live under one of them, a checkout in ``/tmp`` with
    its virtualenv say, are bound back into the new tmpfs, read-only: the tool's code stays
    importable, nothing else of the host's ``/tmp`` is visible.
    """
    wanted = sorted({os.path.realpath(k) for k in keep if os.path.exists(k)}, key=len)
    for path in PRIVATE_TMPFS:
        if not os.path.isdir(path) or os.path.islink(path):
            continue
        inside: list[str] = []
        for candidate in wanted:
            if candidate.startswith(path.rstrip("/") + "/") and not any(
                candidate.startswith(k.rstrip("/") + "/") for k in inside
            ):
                inside.append(candidate)
        size = size_bytes if path == "/tmp" else 1024 * 1024
        _cover_and_bind_back(path, f"size={size},mode=1777", inside)


def _cover_and_bind_back(directory: str, options: str, keep: list[str]) -> None:
    """Mount a private tmpfs over `directory`, then bind `keep` (paths inside it) back in.

    The bound paths are read-only; nothing else of the directory stays visible.
    """
    handles = {path: os.open(path, os.O_PATH) for path in keep}
    _mount("tmpfs", directory, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
    for path, handle in handles.items():
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.isdir(f"/proc/self/fd/{handle}"):
            os.makedirs(path, mode=0o755, exist_ok=True)
        else:
            open(path, "a").close()
        _mount(f"/proc/self/fd/{handle}", path, None, _MS_BIND | _MS_REC)
        _mount(None, path, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY)
        os.close(handle)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    libc = _libc()
    result = libc.mount(
        source.encode() if source else None,
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        code = _ctypes_errno()
        raise OSError(code, f"cannot mount {source or fstype} on {target}: {os.strerror(code)}")


def _traversable(directory: str) -> bool:
    return bool(os.stat(directory).st_mode & stat.S_IXOTH)


def _blocked_ancestor(path: str) -> str | None:
    """The topmost directory above `path` that other users may not enter, if any."""
    current = "/"
    for part in path.strip("/").split("/")[:-1]:
        current = os.path.join(current, part)
        if not _traversable(current):
            return current
    return None


def expose_interpreter(paths: list[str]) -> None:
    """Make `paths` reachable by an unprivileged uid, in this mount namespace only.

    The interpreter may live where only root can enter (``/root/.pyenv``): after the drop to the
    sandbox uid, every lazy import would then fail. Each such directory gets a private tmpfs
    (hiding the rest of it) into which the needed paths are bound back, read-only.
    """
    needed = sorted({os.path.realpath(p) for p in paths if os.path.exists(p)}, key=len)
    kept: list[str] = []
    for path in needed:
        if not any(path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    by_ancestor: dict[str, list[str]] = {}
    for path in kept:
        ancestor = _blocked_ancestor(path)
        if ancestor is not None:
            by_ancestor.setdefault(ancestor, []).append(path)
    for ancestor, inside in sorted(by_ancestor.items()):
        _cover_and_bind_back(ancestor, "size=1m,mode=0755", inside)


def _ctypes_errno() -> int:
    import ctypes

    return ctypes.get_errno() or errno.EPERM


def _prepare_workspace(config: dict[str, Any]) -> None:
    os.makedirs(WORKSPACE, mode=0o700, exist_ok=True)
    drop = config.get("drop_to")
    if drop is not None:
        os.chown(WORKSPACE, int(drop[0]), int(drop[1]))


def _preload(modules: list[str]) -> dict[str, str]:
    failed: dict[str, str] = {}
    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"[:300]
    return failed


def _serve(sock: socket.socket) -> None:
    config = recv_frame(sock)
    sys.path[:] = [str(entry) for entry in config["sys_path"]]
    install_lazy_packages()
    _libc()  # ctypes and libc loaded now, not in the tool process on the call's clock
    try:
        if config.get("private_tmp_bytes"):
            _mount_private_tmpfs(
                int(config["private_tmp_bytes"]), [sys.base_prefix, sys.executable, *sys.path]
            )
        if config.get("expose_interpreter"):
            expose_interpreter([sys.base_prefix, sys.executable, *sys.path])
        failed = _preload([str(name) for name in config.get("preload", ())])
        _prepare_workspace(config)
    except BaseException as exc:
        sock.sendall(encode_frame({"kind": "setup_failed", "error": describe_error(exc)}))
        return
    sys.stdout.flush()
    sys.stderr.flush()
    # Fork the tool process now, so that a call pays for neither the fork nor its set-up.
    pid = os.fork()
    if pid == 0:
        _tool_process(sock, config)
    sock.sendall(encode_frame({"kind": "ready", "preload_failed": failed}))
    _supervise(sock, pid)


def main(argv: list[str]) -> int:
    """Serve one call on the socket whose descriptor is ``argv[1]``."""
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: child.py CONTROL_FD (started by the Bastion sandbox)", file=sys.stderr)
        return 2
    # Our own exit must not wait for the runtime: a closed socket just ends this life.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sock = socket.socket(fileno=int(argv[1]))
    try:
        _serve(sock)
    except ProtocolError:
        return 0  # the runtime went away or closed the worker: nothing to report to
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
