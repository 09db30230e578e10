"""``bastion memory forget|purge`` on the settings' database."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.cli.main import main
from bastion.memory import SqlMemory
from bastion.messages import AgentRequest, AgentResponse, RunStatus
from bastion.testing.clock import FakeClock


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    logger = logging.getLogger("bastion")
    handlers, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers, logger.level = handlers, level


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("BASTION_DATA_DIR", str(tmp_path))
    return tmp_path


async def _store(data_dir: Path, user: str) -> None:
    url = f"sqlite+aiosqlite:///{data_dir / 'bastion.db'}"
    async with SqlMemory.from_url(url, clock=FakeClock()) as memory:
        request = AgentRequest(user_id=user, session_id="s", message="hello")
        await memory.create_run(request, at=FakeClock().now())
        await memory.persist_turns(
            request, AgentResponse(run_id=request.run_id, status=RunStatus.COMPLETED, message="hi")
        )
        await memory.remember(user, "Prefers email")


async def _facts(data_dir: Path, user: str) -> int:
    url = f"sqlite+aiosqlite:///{data_dir / 'bastion.db'}"
    async with SqlMemory.from_url(url, clock=FakeClock()) as memory:
        return len(await memory.recall(user, "email"))


def test_forget_deletes_the_user_and_audits_it(data_dir, capsys):
    asyncio.run(_store(data_dir, "u1"))
    asyncio.run(_store(data_dir, "u2"))
    assert main(["memory", "forget", "--user", "u1", "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["user_id"] == "u1"
    assert out["deleted"] == {
        "memory_facts": 1,
        "runs": 1,
        "session_turns": 2,
        "dbos_workflows": 0,  # none of u1's runs was durable
    }
    assert asyncio.run(_facts(data_dir, "u1")) == 0
    assert asyncio.run(_facts(data_dir, "u2")) == 1
    assert main(["memory", "forget", "--user", "u1", "--yes"]) == 0
    assert "Nothing was stored about u1" in capsys.readouterr().out
    # The erasure is in the audit log, which still verifies.
    assert main(["audit", "verify"]) == 0


def test_forget_deletes_the_users_durable_checkpoints_too(data_dir, capsys):
    from datetime import timedelta

    from bastion.durable import DurableAdmin
    from bastion.settings import Settings

    admin = DurableAdmin(settings=Settings(data_dir=data_dir))
    deadline = FakeClock().now() + timedelta(minutes=5)  # nobody runs them: any deadline
    mine = AgentRequest(user_id="u1", session_id="s", message="my address is 1 Main St")
    theirs = AgentRequest(user_id="u2", session_id="s", message="hello")
    for request in (mine, theirs):
        asyncio.run(admin.enqueue(request, deadline_at=deadline))
    assert main(["memory", "forget", "--user", "u1", "--yes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["deleted"]["dbos_workflows"] == 1
    assert [w.run_id for w in asyncio.run(admin.runs())] == [theirs.run_id]


def test_forget_asks_first_and_refuses_an_empty_user(data_dir, capsys, monkeypatch):
    asyncio.run(_store(data_dir, "u1"))
    monkeypatch.setattr("typer.confirm", lambda *a, **k: False)
    assert main(["memory", "forget", "--user", "u1"]) == 1
    assert asyncio.run(_facts(data_dir, "u1")) == 1
    assert main(["memory", "forget", "--user", " ", "--yes"]) == 2
    assert "--user must not be empty" in capsys.readouterr().err


def test_purge_deletes_turns_past_the_ttl(data_dir, capsys, monkeypatch):
    asyncio.run(_store(data_dir, "u1"))  # stamped by a fake clock in 2026-01-01
    monkeypatch.setenv("BASTION_MEMORY__TURN_TTL_DAYS", "1")
    assert main(["memory", "purge", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"deleted": 2}
