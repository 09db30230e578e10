"""Fixtures for durability tests: worker subprocesses running scripts/kill9_app.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

SCRIPTS = Path(__file__).resolve().parents[2] / "scripts"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def _pg_available() -> bool:
    try:
        import psycopg

        with psycopg.connect(PG_ADMIN, connect_timeout=3):
            return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None for SQLite, else the URL of a fresh PostgreSQL database (dropped afterwards)."""
    if request.param == "sqlite":
        yield None
        return
    if not _pg_available():
        if os.environ.get("BASTION_REQUIRE_POSTGRES") == "1":
            pytest.fail("PostgreSQL at 127.0.0.1:5432 is required but unreachable")
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is unreachable")
    import psycopg

    name = f"bastion_durable_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    try:
        yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


class WorkerProcess:
    def __init__(self, env: dict[str, str], worker_id: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "bastion.cli.main",
                "worker",
                "--app",
                "kill9_app:build",
                "--id",
                worker_id,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ready = threading.Event()
        self.lines: list[str] = []
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if " ready" in line:
                self.ready.set()

    def wait_ready(self) -> None:
        if not self.ready.wait(60):
            self.proc.kill()
            raise AssertionError("worker did not start:\n" + "".join(self.lines[-40:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.fixture
def workers(tmp_path: Path, backend: str | None) -> Iterator[Callable[..., Any]]:
    """Start `bastion worker` subprocesses on the kill9 app, sharing one data dir."""
    started: list[WorkerProcess] = []
    log = tmp_path / "k9.sqlite"

    def env(**extra: str) -> dict[str, str]:
        values = dict(os.environ)
        values.update(
            {
                "BASTION_DATA_DIR": str(tmp_path),
                "BASTION_DURABLE__POLLING_INTERVAL_S": "0.05",
                "BASTION_DURABLE__HEARTBEAT_S": "0.3",
                "BASTION_DURABLE__TAKEOVER_AFTER_S": "2",
                "BASTION_DURABLE__STARTUP_GRACE_S": "3",
                "K9_LOG": str(log),
                "PYTHONPATH": str(SCRIPTS),
            }
        )
        if backend:
            values["BASTION_MEMORY__DATABASE_URL"] = backend
        values.update(extra)
        return values

    def start(worker_id: str = "w1", *, wait: bool = True, **extra: str) -> WorkerProcess:
        worker = WorkerProcess(env(**extra), worker_id)
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    start.log = log  # type: ignore[attr-defined]
    start.env = env  # type: ignore[attr-defined]
    start.backend = backend  # type: ignore[attr-defined]
    start.data_dir = tmp_path  # type: ignore[attr-defined]
    yield start
    for worker in started:
        worker.stop()
