"""A real uvicorn server on 127.0.0.1 (a free port) serving the scripted app, and API keys."""

from __future__ import annotations

import asyncio
import faulthandler
import importlib
import sys
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
import uvicorn

from bastion.clock import SystemClock
from bastion.gate.wiring import gate_from_settings
from bastion.server.app import create_app
from bastion.settings import Settings, load_settings
from bastion.storage.engine import create_engine
from bastion.storage.migrations import migrate

APPS = Path(__file__).parent / "apps"
if str(APPS) not in sys.path:
    sys.path.insert(0, str(APPS))

scripted_app: Any = importlib.import_module("scripted_app")


def server_settings(data_dir: Path, **extra: Any) -> Settings:
    return load_settings(
        data_dir=data_dir,
        durable={"enabled": False},
        gate={"require_api_key": True},
        server={"stream_poll_s": 0.05},
        **extra,
    )


async def _issue_keys(
    settings: Settings, principals: tuple[str, ...] = ("alice", "bob", "admin")
) -> dict[str, str]:
    engine = create_engine(settings.database_url)
    try:
        await migrate(engine)
        wiring = gate_from_settings(settings, engine=engine, clock=SystemClock())
        now = SystemClock().now()
        keys = {}
        for who in principals:
            issued = await wiring.keys.create(who, name="test", now=now, expires_at=None)
            keys[who] = issued.key
        revoked = await wiring.keys.create(principals[0], name="old", now=now, expires_at=None)
        await wiring.keys.revoke(revoked.record.key_id, now=now)
        keys["revoked"] = revoked.key
        return keys
    finally:
        await engine.dispose()


def issue_keys(
    settings: Settings, principals: tuple[str, ...] = ("alice", "bob", "admin")
) -> dict[str, str]:
    """`_issue_keys` on a loop of its own thread (Playwright may own this thread's loop)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _issue_keys(settings, principals)).result()


@dataclass
class Served:
    url: str
    keys: dict[str, str]
    settings: Settings
    app: Any

    def client(self, who: str | None = "alice", **kwargs: Any) -> httpx.Client:
        headers = {} if who is None else {"Authorization": f"Bearer {self.keys[who]}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30, **kwargs)


class ThreadedServer:
    """uvicorn in a thread of this process, on a free port."""

    #: The servers up now (for `pytest_runtest_makereport`'s diagnostics).
    live: ClassVar[set[ThreadedServer]] = set()

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(600):  # bounded wait for a real server: up to 30 s
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            threading.Event().wait(0.05)
        else:
            raise RuntimeError("uvicorn did not start within 30 s")
        port = self.server.servers[0].sockets[0].getsockname()[1]
        ThreadedServer.live.add(self)
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc: object) -> None:
        ThreadedServer.live.discard(self)
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def describe(self) -> str:
        """Every task on the server's loop, with where it waits (read from another thread)."""
        loop = self.server.servers[0].get_loop()
        lines = []
        for task in list(asyncio.all_tasks(loop)):
            lines.append(f"--- {task.get_name()}")
            awaited: Any = task.get_coro()
            while awaited is not None:  # the chain of awaits, outermost first
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is not None:
                    lines.append(
                        f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}"
                    )
                awaited = getattr(awaited, "cr_await", None) or getattr(
                    awaited, "gi_yieldfrom", None
                )
        return "\n".join(lines)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """On a client timeout, attach where the server and every thread were waiting."""
    report = yield
    if call.excinfo is not None and call.excinfo.errisinstance(httpx.TimeoutException):
        for server in list(ThreadedServer.live):
            report.sections.append(("server tasks at the timeout", server.describe()))
        with tempfile.TemporaryFile("w+") as out:
            faulthandler.dump_traceback(out, all_threads=True)
            out.seek(0)
            report.sections.append(("threads at the timeout", out.read()))
    return report


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    settings = server_settings(tmp_path_factory.mktemp("server"))
    keys = issue_keys(settings)
    app = create_app(scripted_app.build(settings), settings=settings, name="scripted")
    with ThreadedServer(app) as url:
        yield Served(url=url, keys=keys, settings=settings, app=app)


@pytest.fixture(scope="module")
def support(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The support demo app on its scripted model, served; keys for c1 and lead."""
    from bastion.demo.support.app import SCRIPT_PATH, build

    settings = server_settings(
        tmp_path_factory.mktemp("support"), model={"name": f"scripted:{SCRIPT_PATH}"}
    )
    keys = issue_keys(settings, ("c1", "lead"))
    app = create_app(build(settings), settings=settings, name="support")
    with ThreadedServer(app) as url:
        yield Served(url=url, keys=keys, settings=settings, app=app)


@pytest.fixture(scope="module")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The scripted app on a model that plans nothing, served (for fuzzing every route)."""
    settings = server_settings(tmp_path_factory.mktemp("quiet"))
    keys = issue_keys(settings)
    app = create_app(scripted_app.build_quiet(settings), settings=settings, name="scripted")
    with ThreadedServer(app) as url:
        yield Served(url=url, keys=keys, settings=settings, app=app)


@pytest.fixture(scope="module")
def durable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The scripted app with durable execution on (DBOS on SQLite), served."""
    settings = load_settings(
        data_dir=tmp_path_factory.mktemp("durable"),
        durable={"enabled": True, "polling_interval_s": 0.05},
        gate={"require_api_key": True},
        server={"stream_poll_s": 0.05},
    )
    keys = issue_keys(settings)
    app = create_app(scripted_app.build(settings), settings=settings, name="scripted")
    with ThreadedServer(app) as url:
        yield Served(url=url, keys=keys, settings=settings, app=app)


@dataclass
class Restartable:
    """A durable app's settings and keys, served anew by each `serve()` (a restart)."""

    settings: Settings
    keys: dict[str, str]

    def run(self, coro: Any) -> Any:
        """Run `coro` on a loop of its own thread (the test's thread may have one running)."""
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coro).result()

    def serve(self) -> ThreadedServer:
        app = create_app(scripted_app.build(self.settings), settings=self.settings, name="scripted")
        return ThreadedServer(app)


@pytest.fixture
def fresh(tmp_path: Path) -> Restartable:
    """The scripted app (in process) on a database of its own, served by each `serve()`."""
    settings = server_settings(tmp_path)
    return Restartable(settings=settings, keys=issue_keys(settings))


@pytest.fixture
def restartable(tmp_path: Path) -> Restartable:
    settings = load_settings(
        data_dir=tmp_path,
        durable={"enabled": True, "polling_interval_s": 0.05},
        gate={"require_api_key": True},
    )
    return Restartable(settings=settings, keys=issue_keys(settings, ("alice",)))


@dataclass
class Traced(Served):
    spans: Any = None


@pytest.fixture(scope="module")
def traced(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traced]:
    """The scripted app served with its spans going to an in-memory exporter."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    settings = server_settings(tmp_path_factory.mktemp("traced"))
    keys = issue_keys(settings)
    app = create_app(
        scripted_app.build(settings), settings=settings, name="scripted", tracer_provider=provider
    )
    with ThreadedServer(app) as url:
        yield Traced(url=url, keys=keys, settings=settings, app=app, spans=exporter)
    provider.shutdown()
